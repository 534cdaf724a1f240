#!/bin/sh
# tui.sh — the TUI as a person sees it: dreamos --demo inside a private tmux
# server (120x40), the screen read with capture-pane.  The four panes, the
# demo agents ready, tasks moving, log lines and messages arriving; then
# commands typed at the prompt (agent list, task add, send, apikey create,
# a bad command, Tab completion, history, Ctrl-C, Esc), the message line and
# popups (wrapping, size, scrolling), F1 help, F-key and Alt focus, zoom,
# filters, resizes to 80x24 and 80x16 (what is cut, dropped or out of view
# says so), and `quit`: exit 0, the terminal restored (canonical mode and
# echo on, alternate screen left) and no agent left running.  Also Ctrl-D
# on an empty prompt with NO_COLOR=1, 140 columns and Ctrl-C, and SIGTERM.
# Skipped (77) without tmux.
command -v tmux >/dev/null 2>&1 || { echo "SKIP: tmux not found"; exit 77; }
. "${top_srcdir:-.}/tests/integration/lib.sh"

SHARE=${DREAMOS_SHARE:-${top_srcdir:-.}/share}
case $SHARE in /*) ;; *) SHARE=$(pwd)/$SHARE ;; esac
case $DREAMOS in /*) ;; *) DREAMOS=$(pwd)/$DREAMOS ;; esac
SOCK=dreamos-test-$$
S=main # the tmux session being looked at
unset TMUX
# The vertical line of the separators and popups: ncurses draws it with the
# terminal's line-drawing set (for xterm), which capture-pane shows as 'x',
# or as U+2502 in a UTF-8 locale on some terminals.
V='(│|x)'

tm() { tmux -L "$SOCK" -f /dev/null "$@"; }

# On failure, show the screen too.
fail() {
	echo "FAIL: $*" >&2
	if tm has-session -t "$S" 2>/dev/null; then
		echo "--- screen of session $S" >&2
		tm capture-pane -p -t "$S" >&2
	fi
	for f in "$T"/*.err "$T"/*/logs/tui-stderr.log; do
		[ -s "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
	done
	exit 1
}

SOCKPATH="" # the tmux server's socket, which kill-server leaves behind
tui_cleanup() {
	tm kill-server 2>/dev/null
	[ -n "$SOCKPATH" ] && rm -f "$SOCKPATH"
	cleanup
}
trap tui_cleanup EXIT
trap 'exit 1' INT TERM HUP

# start NAME RUNTIME [ENV=VALUE...] -- [DREAMOS ARGS...]: starts dreamos in
# a new tmux session NAME (120x40, TERM=xterm-256color) through a wrapper
# that, once dreamos exits, prints EXIT=<status> and the state of the
# terminal ("TTY echo icanon" when restored), then sleeps so that the screen
# can still be read.  Sets S=NAME.
start() {
	S=$1 rt=$2
	shift 2
	w="$T/$S.sh"
	{
		echo "TERM=xterm-256color; export TERM"
		echo "DREAMOS_SHARE='$SHARE'; export DREAMOS_SHARE"
		while [ $# -gt 0 ] && [ "$1" != -- ]; do
			echo "$1; export ${1%%=*}"
			shift
		done
		[ $# -gt 0 ] && shift
		printf "'%s' --runtime '%s'" "$DREAMOS" "$rt"
		for a in "$@"; do printf " '%s'" "$a"; done
		echo
		cat <<-'EOF'
			echo EXIT=$?
			echo TTY $(stty -a | tr ' ;' '\n\n' | grep -E '^-?(icanon|echo)$' | LC_ALL=C sort)
			exec sleep 30
		EOF
	} >"$w"
	if [ -z "$SOCKPATH" ]; then
		# A session that lasts until the end, so that the server does not
		# exit when a test's session is killed: a new-session racing that
		# exit failed with "server exited unexpectedly".
		tm new-session -d -s keep "sleep 3600" || fail "tmux new-session"
		SOCKPATH=$(tm display -p -t keep '#{socket_path}')
	fi
	tm new-session -d -s "$S" -x 120 -y 40 "sh '$w'" || fail "tmux new-session"
}

# screen [-e]: the visible screen of session $S (-e: with attributes).
screen() { tm capture-pane -p "$@" -t "$S"; }

# wait_screen REGEX [SECONDS]: until the screen matches the extended regex
# (10 s at most); the screen is left in $T/screen.txt.
wait_screen() {
	n=$((${2:-10} * 20))
	i=0
	while [ $i -lt $n ]; do
		screen >"$T/screen.txt" 2>/dev/null
		grep -Eq -- "$1" "$T/screen.txt" && return 0
		sleep 0.05
		i=$((i + 1))
	done
	fail "the screen did not show /$1/ within ${2:-10} s"
}

# wait_screen_not REGEX [SECONDS]: until the screen no longer matches.
wait_screen_not() {
	n=$((${2:-10} * 20))
	i=0
	while [ $i -lt $n ]; do
		screen >"$T/screen.txt" 2>/dev/null
		grep -Eq -- "$1" "$T/screen.txt" || return 0
		sleep 0.05
		i=$((i + 1))
	done
	fail "the screen still shows /$1/ after ${2:-10} s"
}

# wait_attr REGEX [SECONDS]: wait_screen on the screen with attributes.
wait_attr() {
	n=$((${2:-10} * 20))
	i=0
	while [ $i -lt $n ]; do
		screen -e >"$T/screen.txt" 2>/dev/null
		grep -Eq -- "$1" "$T/screen.txt" && return 0
		sleep 0.05
		i=$((i + 1))
	done
	fail "the screen (with attributes) did not show /$1/ within ${2:-10} s"
}

# line N: line N (from 1) of the screen.
line() { screen | sed -n "$1p"; }

# wait_line N REGEX [SECONDS]: until line N of the screen matches.
wait_line() {
	n=$((${3:-10} * 20))
	i=0
	while [ $i -lt $n ]; do
		line "$1" 2>/dev/null | grep -Eq -- "$2" && return 0
		sleep 0.05
		i=$((i + 1))
	done
	fail "line $1 of the screen did not show /$2/ within ${3:-10} s: $(line "$1")"
}

# popup_words: the words of the popup on the screen ($T/screen.txt, 120
# columns), one per line, its lines joined as they were wrapped.
popup_words() {
	"${PYTHON3:-python3}" -c '
import sys
rows = open(sys.argv[1], encoding="utf-8", errors="replace").read().split("\n")
top = [i for i, r in enumerate(rows) if "(Esc closes" in r][0]
for r in rows[top + 1:]:
	if r[3:4] in ("m", "\u2514"):
		break
	for w in r[5:115].split():
		print(w)
' "$T/screen.txt"
}

keys() { tm send-keys -t "$S" "$@"; }
# type_line TEXT: types TEXT at the prompt and presses Enter.
type_line() {
	tm send-keys -t "$S" -l "$1"
	tm send-keys -t "$S" Enter
}
# esc: Escape alone (a key sent at once after it would be read as Alt-key).
esc() {
	tm send-keys -t "$S" Escape
	sleep 0.2
}

# instance RUNTIME: waits until dreamos answers there; sets DPID.
instance() {
	i=0
	while [ $i -lt 200 ]; do
		DPID=$("$DREAMOS" ctl --runtime "$1" status --json 2>/dev/null | json_get 'j["pid"]' 2>/dev/null) &&
			[ -n "$DPID" ] && break
		sleep 0.05
		i=$((i + 1))
	done
	[ -n "$DPID" ] || fail "dreamos did not answer on $1"
	PIDS="$PIDS $DPID"
}

# agent_pids RUNTIME: the pids of the running agents there.
agent_pids() {
	"$DREAMOS" ctl --runtime "$1" agent list --json |
		json_get '" ".join(str(a["pid"]) for a in j if a.get("pid"))'
}

# an_agent PID: true while PID is still one of our agent programs.
an_agent() {
	kill -0 "$1" 2>/dev/null || return 1
	[ -r "/proc/$1/cmdline" ] || return 0
	tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "agents/"
}

# tty_mode: "raw" while canonical mode and echo are off on the pane's
# terminal, "cooked" when both are on, else "mixed".
tty_mode() {
	tty=$(tm display -p -t "$S" '#{pane_tty}')
	f=$(stty -a <"$tty" | tr ' ;' '\n\n' | grep -E '^-?(icanon|echo)$' | LC_ALL=C sort | tr '\n' ' ')
	case $f in
	"-echo -icanon ") echo raw ;;
	"echo icanon ") echo cooked ;;
	*) echo "mixed ($f)" ;;
	esac
}

alt_screen() { tm display -p -t "$S" '#{alternate_on}'; }

# after_exit [SECONDS]: waits for the wrapper's EXIT= line and checks that
# dreamos exited 0, left the terminal as it found it, wrote nothing on the
# normal screen, and that its process and the agents in $APIDS are gone.
after_exit() {
	wait_screen '^EXIT=[0-9]+' "${1:-10}"
	grep -q '^EXIT=0$' "$T/screen.txt" || fail "exit status: $(grep '^EXIT=' "$T/screen.txt")"
	wait_screen '^TTY '
	grep -q '^TTY echo icanon$' "$T/screen.txt" ||
		fail "terminal not restored: $(grep '^TTY ' "$T/screen.txt")"
	[ "$(alt_screen)" = 0 ] || fail "still on the alternate screen"
	# Only our wrapper's lines on the normal screen: no warning from dreamos.
	extra=$(grep -Ev '^(EXIT=|TTY |$)' "$T/screen.txt")
	[ -z "$extra" ] || fail "dreamos printed after exit: $extra"
	i=0
	while kill -0 "$DPID" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.05; i=$((i + 1)); done
	kill -0 "$DPID" 2>/dev/null && fail "dreamos (pid $DPID) still runs after EXIT="
	for p in $APIDS; do
		i=0
		while an_agent "$p" && [ $i -lt 60 ]; do sleep 0.05; i=$((i + 1)); done
		an_agent "$p" && fail "agent pid $p still runs after dreamos exited"
	done
	return 0
}

# ---- the demo, as a person sees it ---------------------------------------

start main "$T/rt" -- --demo
instance "$T/rt"
wait_screen '^ F2 Agents .* F3 Tasks '
wait_screen '^ F4 Messages .* F5 Logs'
[ "$(tty_mode)" = raw ] || fail "the TUI did not put the terminal in raw mode: $(tty_mode)"
[ "$(alt_screen)" = 1 ] || fail "the TUI is not on the alternate screen"
# 120x40: the top panes take 18 rows, then the bottom ones; message line,
# status bar and prompt at the bottom.
wait_line 19 '^ F4 Messages'
wait_line 39 '^ agents [0-9]+/[0-9]+ \| [0-9]+ msg/s \| tasks .*\| db ok '
wait_line 40 '^captain> *$'
ok "four panes, status bar and prompt at 120x40; raw mode, alternate screen"

# Tasks move: something runs (the demo tasks take a few seconds), then the
# chain ends with the report published.
wait_screen "${V}[0-9]+ +[a-z]+ +(assigned|running) " 10
for a in greeter worker-1 worker-2 chatter; do
	wait_screen "^$a +ready " 15
done
wait_screen "^dreamscribe +ready " 15
wait_screen '^ F2 Agents  [0-9]+/[0-9]+ up'
ok "demo agents and the core extensions' agents ready in the agents pane"

wait_screen "${V}5 +urgent +done +1/4 +publish the report" 20
wait_screen "${V}3 +normal +done +2/4 +a job that fails once" 10
ok "tasks move: running, then done (one retried)"

# Log lines arrive in the logs pane (right of the separator), messages in
# the messages pane (left, from column 0).
wait_screen "${V}[0-9]{2}:[0-9]{2}:[0-9]{2} INFO  worker-[12]: starting task"
wait_screen "${V}[0-9]{2}:[0-9]{2}:[0-9]{2} WARN  tasks: task [0-9]+ .* -> failed"
wait_screen '^[0-9]{2}:[0-9]{2}:[0-9]{2} chatter [^ ]+ [a-z#-]+' 15
ok "log lines and messages arrive"

APIDS=$(agent_pids "$T/rt")
[ -n "$APIDS" ] || fail "no agent pids"

type_line 'agent list'
wait_screen 'agent list  \(Esc closes'
wait_screen "${V} greeter +ready +[0-9]+ "
grep -Eq "${V} NAME +STATE +PID " "$T/screen.txt" || fail "agent list popup header"
esc
wait_screen_not 'agent list  \(Esc closes'
ok "agent list: popup, Esc closes it"

type_line 'task add hello --priority high'
wait_screen '^task [0-9]+ added'
wait_screen "${V}[0-9]+ +high +[a-z]+ +[0-9]+/[0-9]+ +hello *\$"
wait_screen 'INFO  >: captain> task add hello --priority high'
ok "task add: message line, tasks pane, logs pane"

type_line 'send greeter hi'
wait_screen '^message [0-9]+ stored for 1 recipient'
wait_screen '^[0-9:]{8} captain [^ ]+ greeter hi '
wait_screen '^[0-9:]{8} greeter [^ ]+ captain ' 10
ok "send greeter hi: shown in messages, greeter replies to captain"

# apikey create shows the key once: in its popup, not kept in the logs pane
# (nor in a file of the runtime: only its hash is stored).
type_line 'apikey create tui-key --role observer'
wait_screen 'apikey create  \(Esc closes'
wait_screen "${V} key +[^ ]{20,} "
key=$(sed -n 's/^.* key  *\([^ ]\{20,\}\) .*$/\1/p' "$T/screen.txt" | head -n 1)
[ -n "$key" ] || fail "apikey create: no key in the popup"
esc
wait_screen 'INFO  >: captain> apikey create tui-key --role observer'
wait_screen 'INFO  >: \(output not kept here: it holds a secret\)'
screen | grep -qF -- "$key" && fail "apikey create: the key stays on the screen"
grep -rlaF -- "$key" "$T/rt" >"$T/key.files" && fail "apikey create: the key is in $(cat "$T/key.files")"
ok "apikey create: the key shows in the popup only, not in the logs pane or a file"

# A command's result replaces the last one's on the message line, also when
# it opens a popup instead.
type_line 'agent stop chatter'
wait_screen 'agent stop  \(Esc closes'
esc
wait_screen '^chatter +stopped '
type_line 'agent stop chatter'
wait_screen "^agent stop: agent 'chatter' is not running"
type_line 'agent restart chatter'
wait_screen 'agent restart  \(Esc closes'
wait_line 38 '^ *$'
# Three lines: a popup of five rows (from the third), not the whole screen.
wait_line 7 '^.{3}(m|└)'
esc
wait_screen '^chatter +(starting|ready) '
ok "a result in a popup clears the last command's result from the message line; the popup is as high as its text"

# Popups wrap long lines at spaces, to the popup's width: help agent spawn
# has a usage of 226 columns and a paragraph; every word shows, in order.
type_line 'help agent spawn'
wait_screen 'help  \(Esc closes'
wait_screen "${V} options: "
popup_words >"$T/popup.words"
"$DREAMOS" ctl --runtime "$T/rt" help agent spawn | tr -s ' \n' '\n\n' | grep . >"$T/help.words"
cmp -s "$T/popup.words" "$T/help.words" ||
	fail "help agent spawn: the popup is not the text wrapped: $(diff "$T/help.words" "$T/popup.words" | head -5)"
grep -Eq "${V}   \[--option NAME=VALUE\]\.\.\. +${V}" "$T/screen.txt" || fail "help agent spawn: continuation lines not indented"
esc
# A popup taller than the screen says which lines show, and scrolls.
keys F1
wait_screen 'help  \(Esc closes'
wait_screen ' 1-32 of [0-9]+ '
keys NPage
wait_screen ' 21-52 of [0-9]+ '
esc
# A one-line result too long for the message line opens a popup.
long=$(printf '%0130d' 0)
type_line "filter logs text=$long"
wait_screen 'filter  \(Esc closes'
wait_screen "${V} +text=0{100}"
esc
type_line 'filter logs clear'
wait_screen '^logs: filter cleared'
# An error too long for the message line: there cut, whole in a popup.
type_line "agent info $long"
wait_screen 'agent info  \(Esc closes'
wait_screen "^agent info: no agent named '0+(…|~)\$"
wait_screen "${V} +0+' \(see 'agent list'\) +${V}"
esc
ok "popups wrap at spaces and scroll; a long one-line result or error opens a popup"

type_line 'frobnicate --now'
wait_screen "^unknown command: frobnicate \(try 'help'\)"
wait_screen 'ERROR >: unknown command: frobnicate'
wait_line 40 '^captain> *$'
ok "a bad command: one line on the message line, the TUI goes on"

# Up recalls the history.
keys Up
wait_screen '^captain> frobnicate --now'
keys C-u
wait_screen '^captain> *$'
ok "Up recalls the last command"

# A secret typed in an option: Up still has it (this session), the logs pane
# and RUNTIME/history have it redacted (checked after quit).
type_line 'agent spawn tok --env API_TOKEN=s3cr3t-tui-99 -- /nonexistent/prog'
wait_screen "^agent spawn: .*/nonexistent/prog"
wait_screen 'captain> agent spawn tok --env API_TOKEN=\[redacted\]'
screen | grep -q 's3cr3t-tui-99' && fail "a typed secret stayed on screen"
keys Up
wait_screen '^captain> agent spawn tok --env API_TOKEN=s3cr3t-tui-99 -- /nonexistent/prog *$'
keys C-u
wait_screen '^captain> *$'
ok "a typed secret: whole for Up, redacted in the logs pane"

keys -l 'ag'
keys Tab
wait_screen '^captain> agent *$'
keys Tab Tab
wait_screen '^candidates: .* list .*spawn'
keys -l 'li'
keys Tab
wait_screen '^captain> agent list *$'
keys Enter
wait_screen 'agent list  \(Esc closes'
wait_screen_not '^candidates:'
esc
wait_screen_not 'agent list  \(Esc closes'
# The candidates go once the line no longer goes on from where they were
# listed.
keys -l 'agent '
keys Tab Tab
wait_screen '^candidates: .* list .*spawn'
keys C-u
wait_screen_not '^candidates:'
ok "Tab completes 'ag' to 'agent', lists and completes subcommands"

# Ctrl-C clears the line, like a shell; Alt-b is still readline's.
keys -l 'agent list'
keys M-b
keys -l 'x'
wait_screen '^captain> agent xlist$'
keys C-c
wait_screen '^captain> *$'
ok "Ctrl-C clears the prompt line; Alt-b moves back a word"

keys F1
wait_screen 'help  \(Esc closes'
wait_screen "${V} Keys "
wait_screen "${V}   F2 F3 F4 F5 +focus agents"
esc
wait_screen_not 'help  \(Esc closes'
ok "F1 help popup with Keys; Esc closes it"

# Esc and the keys typed right after it arrive together (within ncurses'
# ESCDELAY): Esc closes the popup and the keys still count ('a' is no
# Alt-key), so this runs 'agent list', not 'gent list'.
keys F1
wait_screen 'help  \(Esc closes'
keys Escape 'agent list' Enter
wait_screen 'agent list  \(Esc closes'
esc
wait_screen_not 'agent list  \(Esc closes'
ok "keys typed right after Esc are not taken for Alt-keys"

# Focus: the focused title is drawn on yellow (43), the others on cyan (46).
wait_attr '43m.? F5 Logs'
keys F2
wait_attr '43m.? F2 Agents'
wait_attr '46m.? F5 Logs'
keys F3
wait_attr '43m.? F3 Tasks'
keys F4
wait_attr '43m.? F4 Messages'
keys M-4
wait_attr '43m.? F5 Logs'
keys M-2
wait_attr '43m.? F3 Tasks'
ok "F2-F5 and Alt-N move the focus"

keys M-z
wait_screen_not ' F2 Agents'
wait_screen_not ' F5 Logs'
wait_line 1 '^ F3 Tasks '
keys M-z
wait_screen ' F5 Logs'
wait_line 1 '^ F2 Agents '
ok "Alt-z zooms the focused pane and back"

type_line 'filter logs level>=warn'
wait_screen ' F5 Logs  \[filter: level>=warn\]'
wait_screen '^logs: filter level>=warn'
wait_screen_not "${V}[0-9:]{8} (TRACE|DEBUG|INFO ) " 5
wait_screen "${V}[0-9:]{8} (WARN |ERROR) "
type_line 'filter logs clear'
wait_screen '^logs: filter cleared'
wait_screen_not '\[filter:' 5
wait_screen "${V}[0-9:]{8} INFO  "
ok "filter logs level>=warn shows in the title and filters; clear removes it"

tm resize-window -t "$S" -x 80 -y 24 || fail "tmux resize-window"
wait_screen '^ F4 Messages' 5
[ "$(screen | wc -l)" -eq 24 ] || fail "resize: not 24 rows"
wait_line 1 "^ F2 Agents .*${V} F3 Tasks "
wait_line 11 "^ F4 Messages .*${V} F5 Logs"
wait_line 23 '^ agents [0-9]'
wait_line 24 '^captain> *$'
ok "resize to 80x24: layout redone"

# At 80 columns the status bar drops its less needed fields, not the
# database state and the clock; titles are cut whole, or with an ellipsis.
wait_line 23 "^ agents [0-9]+/[0-9]+ .*\| db ok [^|]*\| [0-9]{2}:[0-9]{2}:[0-9]{2} *\$"
wait_line 1 "${V} F3 Tasks  queued [0-9]+  running [0-9]+(  blocked [0-9]+)?(  dead [0-9]+)?( +\+[0-9]+ more)? *\$"
type_line 'filter tasks state=done'
wait_line 1 "${V} F3 Tasks .*\[(filter: )?state=done\]( +\+[0-9]+ more)? *\$"
# ... and the filter stays when the focus moves (it used to go).
keys F3
wait_attr '43m.? F3 Tasks'
wait_line 1 "${V} F3 Tasks .*\[(filter: )?state=done\]( +\+[0-9]+ more)? *\$"
type_line 'filter tasks clear'
wait_line 1 "${V} F3 Tasks  queued [0-9]+ "
# The logs pane scrolled up counts the new lines at the right of its title.
keys F5
keys PPage
wait_line 11 "${V} F5 Logs  \(scrolled.* [0-9]+ new lines \(End\) *\$"
keys End
wait_line 11 "${V} F5 Logs *\$"
ok "80x24: status bar keeps db state and clock; pane titles fit; filters stay on focus change"

# A pane with more rows than fit says so in its title, and End shows the
# last rows (nag: wait_line uses n).
tm resize-window -t "$S" -x 80 -y 16 || fail "tmux resize-window"
nag=$("$DREAMOS" ctl --runtime "$T/rt" agent list --json | json_get 'len(j)')
[ "$nag" -gt 4 ] || fail "only $nag agents"
wait_line 1 "^ F2 Agents .* \+$((nag - 4)) more ${V}"
keys F2 End
wait_line 1 "^ F2 Agents .* $((nag - 4)) above ${V}"
keys Home
wait_line 1 "^ F2 Agents .* \+$((nag - 4)) more ${V}"
tm resize-window -t "$S" -x 80 -y 24 || fail "tmux resize-window"
wait_line 24 '^captain> *$'
ok "a pane with more rows than fit: '+N more' and 'N above' in its title"
# The last command before quit (the history is checked below).
type_line 'status'
wait_screen '^captain> *$'
wait_screen 'status  \(Esc closes'
ok "80x24: the prompt still works"

# Agents restarted meanwhile (flaky crashes on purpose) count too.
APIDS="$APIDS $(agent_pids "$T/rt")"
type_line 'quit'
after_exit 15
ok "quit: exit 0, terminal restored, no agent left"
# Everything written and flushed now: still no file holds the key.
grep -rlaF -- "$key" "$T/rt" >"$T/key.files" && fail "apikey create: the key is in $(cat "$T/key.files")"
grep -rlaF -- s3cr3t-tui-99 "$T/rt" >"$T/key.files" && fail "a typed secret is in $(cat "$T/key.files")"
grep -qF 'agent spawn tok --env API_TOKEN=[redacted] -- /nonexistent/prog' "$T/rt/history" ||
	fail "RUNTIME/history: no redacted line"
tm kill-session -t main

# ---- again on the same runtime: history; NO_COLOR; Ctrl-D ----------------

# Without the core extensions (their agents would fill the agents pane).
printf 'extensions:\n  load: []\n' >"$T/noext.yaml"
start nocolor "$T/rt" NO_COLOR=1 -- --config "$T/noext.yaml"
instance "$T/rt"
APIDS=""
wait_screen '^ F2 Agents .* F3 Tasks '
# The demo agents are not remembered; the tasks of the last run are shown.
wait_screen "no agents: 'agent spawn NAME -- PROGRAM'"
wait_screen "${V}[0-9]+ +high +[a-z]+ .*hello *\$"
keys Up
wait_screen '^captain> quit *$'
keys Up
wait_screen '^captain> status *$'
keys C-u
wait_screen '^captain> *$'
ok "history kept across runs (RUNTIME/history)"
ESC=$(printf '\033')
screen -e | grep -Eq "$ESC\\[([0-9]+;)*([34][0-7]|[34]8;5)[;m]" && fail "NO_COLOR: colours on screen"
screen -e | grep -q "$ESC\\[7m" || fail "NO_COLOR: titles not in reverse video"
keys -l 'x'
wait_screen '^captain> x$'
keys BSpace
wait_screen '^captain> *$'
keys C-d
after_exit
ok "NO_COLOR=1: no colours; Ctrl-D on an empty prompt exits 0, terminal restored"
tm kill-session -t nocolor

# ---- 140 columns; Ctrl-C ----------------------------------------------------

start ctrlc "$T/rt4" -- --config "$T/noext.yaml"
instance "$T/rt4"
APIDS=""
wait_line 40 '^captain> *$'

# (On its own runtime: a spawned agent is remembered.)  A cell cut short
# ends with an ellipsis ('~' outside UTF-8); at 140 columns INFO has the
# room for the backoff countdown.
E='(…|~)'
tm resize-window -t "$S" -x 140 -y 40 || fail "tmux resize-window"
wait_line 1 "^ F2 Agents .{50,}${V} F3 Tasks "
type_line 'agent spawn an-agent-with-a-long-name -- /bin/false'
wait_screen "^an-agent-w[a-z-]*$E +backoff +.* restart in [0-9.]+ s, attempt [0-9]+ *${V}"
ok "at 140 columns: a long agent name ends with an ellipsis, INFO shows the backoff countdown"

keys -l 'status'
wait_screen '^captain> status$'
keys C-c
wait_line 40 '^captain> *$'
keys C-c
after_exit
ok "Ctrl-C: clears the line, then on the empty line quits: exit 0, terminal restored"
tm kill-session -t ctrlc

# ---- SIGTERM ---------------------------------------------------------------

start term "$T/rt3" -- --demo
instance "$T/rt3"
wait_screen '^greeter +ready ' 15
APIDS=$(agent_pids "$T/rt3")
[ "$(tty_mode)" = raw ] || fail "not raw: $(tty_mode)"
kill -TERM "$DPID"
after_exit 15
ok "SIGTERM: exit 0, terminal restored, no agent left"
