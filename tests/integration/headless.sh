#!/bin/sh
# headless.sh — dreamos --headless in a fresh runtime, driven by dreamos ctl:
# status (text and JSON), the single-instance lock, exit codes, file modes,
# logs, SIGHUP, clean shutdown on SIGTERM and `quit`, restart after kill -9,
# and captain commands on stdin.
. "${top_srcdir:-.}/tests/integration/lib.sh"

# no_errors WHAT: the session that just ended logged no error (a clean
# start and stop must not).
no_errors() {
	! grep " ERROR " "$T/headless.err" >"$T/errors.txt" || fail "$1: errors logged: $(cat "$T/errors.txt")"
}

"$DREAMOS" --version | grep -q '^dreamos [0-9]' || fail "--version"
"$DREAMOS" --help | grep -q -- '--headless' || fail "--help"
"$DREAMOS" --bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad option must exit 2"
"$DREAMOS" --headless --runtime "$T/never" --log-level loud >/dev/null 2>"$T/level.err"
[ $? -eq 2 ] || fail "a bad --log-level must exit 2"
grep -q "unknown level 'loud'" "$T/level.err" || fail "--log-level: $(cat "$T/level.err")"
[ -e "$T/never" ] && fail "a bad --log-level created the runtime directory"
"$DREAMOS" ctl --runtime "$T/never" --bogus status >/dev/null 2>"$T/ctlopt.err"
[ $? -eq 2 ] || fail "ctl with a bad option must exit 2"
grep -q "dreamos ctl: unknown option '--bogus'" "$T/ctlopt.err" || fail "ctl --bogus: $(cat "$T/ctlopt.err")"
ok "--help, --version, bad options (exit 2 before anything starts)"

ctl status >/dev/null 2>"$T/noinst.err"; rc=$?
[ $rc -eq 3 ] || fail "ctl without an instance must exit 3, got $rc"
grep -q "no running dreamos instance" "$T/noinst.err" || fail "no-instance message"
ok "ctl without an instance exits 3"

start_headless
ctl status >"$T/status.txt" || fail "ctl status"
grep -q "^runtime   $RT" "$T/status.txt" || fail "status text: $(cat "$T/status.txt")"
grep -q "pid $PID" "$T/status.txt" || fail "status shows the pid"
grep -q "^database  $RT/dreamos.db, [0-9.]* [KM]*i*B (WAL [0-9.]* [KM]*i*B), schema v" "$T/status.txt" ||
	fail "status: database line: $(grep database "$T/status.txt")"
W=$(stat -c %s "$RT/dreamos.db-wal")
ctl status --json | jtest "0 < j['db']['wal_bytes'] <= j['db']['size_bytes'] and abs(j['db']['wal_bytes'] - $W) < 1 << 20" ||
	fail "status --json: wal_bytes against $W: $(ctl status --json | grep _bytes)"
ok "ctl status (text): the database size and its WAL's part"

pid=$(ctl status --json | json_get 'j["pid"]')
[ "$pid" = "$PID" ] || fail "status --json pid $pid != $PID"
[ "$(ctl status --json | json_get 'j["db"]["state"]')" = ok ] || fail "db state"
# Reals come out short (15 significant digits): 0.208721, not 0.20872099999999999.
ctl status --json >"$T/st.json"
grep -E '[0-9]\.[0-9]*(0000000|9999999)[0-9]' "$T/st.json" && fail "long reals in status --json"
grep -q '"uptime_s": [0-9]' "$T/st.json" || fail "status --json: $(cat "$T/st.json")"
ok "ctl status --json parses, reals short"

[ "$(stat -c %a "$RT")" = 700 ] || fail "runtime dir mode $(stat -c %a "$RT")"
[ "$(stat -c %a "$RT/dreamos.sock")" = 600 ] || fail "socket mode"
[ -f "$RT/dreamos.db" ] || fail "no dreamos.db"
[ -f "$RT/logs/dreamos.log" ] || fail "no logs/dreamos.log"
ok "runtime 0700, socket 0600, db and log present"

"$DREAMOS" --headless --runtime "$RT" </dev/null >/dev/null 2>"$T/second.err"; rc=$?
[ $rc -eq 1 ] || fail "second instance must exit 1, got $rc"
grep -q "in use by dreamos pid $PID" "$T/second.err" || fail "second instance: $(cat "$T/second.err")"
ok "second instance refused naming pid $PID"

ctl frobnicate >/dev/null 2>"$T/unknown.err"; rc=$?
[ $rc -eq 2 ] || fail "unknown command must exit 2, got $rc"
grep -q "unknown command: frobnicate" "$T/unknown.err" || fail "unknown message"
ctl logs --limit zero >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad value must exit 2"
ok "usage errors exit 2 with one clear line"

ctl log level debug | grep -q "log level: debug (was info)" || fail "log level"
ctl logs --grep "log level changed" | grep -q "INFO  captain" || fail "logs shows the change"
ctl logs --json --limit 5 | json_get 'len(j)' >/dev/null
ok "log level and logs"

# help and dreamos(1) agree: the usage of every core command, as help shows
# it (each alternative of agent spawn), is in a tag of CAPTAIN COMMANDS.
ctl help --json >"$T/help.json" || fail "help --json"
"${PYTHON3:-python3}" - "$T/help.json" "${top_srcdir:-.}/man/dreamos.1" >"$T/man.out" <<'EOF' || fail "not in dreamos(1): $(cat "$T/man.out")"
import json, re, sys
help_list = json.load(open(sys.argv[1]))["commands"]
lines = open(sys.argv[2]).read().split("\n")
# The tag lines of the CAPTAIN COMMANDS section as plain text.
tags, inside = [], False
for i, l in enumerate(lines):
    if l.startswith(".SH "):
        inside = l.startswith(".SH CAPTAIN COMMANDS")
    if inside and l == ".TP" and i + 1 < len(lines):
        t = lines[i + 1]
        m = re.match(r"\.(B|I|BR|BI|IB|RB|IR|RI) (.*)", t)
        if m:
            words = [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', m.group(2))]
            t = (" " if len(m.group(1)) == 1 else "").join(words)
        t = re.sub(r"\\f[BIRP]", "", t).replace("\\-", "-")
        tags.append(re.sub(r"\s+", " ", t))
bad = []
for c in help_list:
    if c["owner"] not in ("core", "ext"):
        continue
    usage = c["usage"][len(c["name"]):].strip()
    for alt in usage.split(" | ") if usage else [""]:
        want = (c["name"] + " " + alt).strip()
        if not any(want in t for t in tags):
            bad.append(want)
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
ok "help and dreamos(1) show the same usage for every core command"

# The log file holds JSON lines.
head -n 3 "$RT/logs/dreamos.log" | while read -r line; do
	echo "$line" | json_get 'j["level"]' >/dev/null
done
ok "log file is JSON lines"

# SIGHUP reopens the log file after an outside rotation.
mv "$RT/logs/dreamos.log" "$RT/logs/dreamos.log.old"
kill -HUP "$PID"
i=0
while [ ! -s "$RT/logs/dreamos.log" ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
grep -q "SIGHUP" "$RT/logs/dreamos.log" || fail "log not reopened on SIGHUP"
ok "SIGHUP reopens the log"

kill -TERM "$PID"
wait_exit "$PID"; rc=$RC
[ "$rc" = 0 ] || fail "SIGTERM exit status $rc"
[ ! -e "$RT/dreamos.sock" ] || fail "socket left behind"
[ ! -e "$RT/dreamos.lock" ] || fail "lock left behind"
grep -q "shutting down (SIGTERM)" "$T/headless.err" || fail "no shutdown log on stderr"
no_errors "SIGTERM"
ok "SIGTERM: exit 0, no socket, no lock, no error logged"

# kill -9 leaves a stale socket and lock file; the next start copes.
start_headless
kill -KILL "$PID"; wait "$PID" 2>/dev/null
[ -e "$RT/dreamos.sock" ] || fail "expected a stale socket after kill -9"
start_headless
ctl status >/dev/null || fail "status after restart"
ok "restart after kill -9"

ctl quit | grep -q "shutting down" || fail "quit reply"
wait_exit "$PID"; rc=$RC
[ "$rc" = 0 ] || fail "quit exit status $rc"
[ ! -e "$RT/dreamos.sock" ] || fail "socket left after quit"
no_errors "quit"
ok "ctl quit"

# Captain commands on stdin when it is not a terminal.
printf 'status --json\nnosuch\nlog level warn\nquit\n' |
	"$DREAMOS" --headless --runtime "$RT" >"$T/stdin.out" 2>"$T/stdin.err" &
SPID=$!
PIDS="$PIDS $SPID"
wait_exit "$SPID"; rc=$RC
[ "$rc" = 0 ] || fail "stdin mode exit status $rc"
grep -q '"pid"' "$T/stdin.out" || fail "stdin status output: $(cat "$T/stdin.out")"
grep -q "log level: warn (was info)" "$T/stdin.out" || fail "stdin log level"
grep -q "dreamos: unknown command: nosuch" "$T/stdin.err" || fail "stdin error line"
ok "captain commands on stdin"

# --demo runs in the foreground too.
"$DREAMOS" --demo --runtime "$RT" </dev/null >/dev/null 2>"$T/demo.err" &
PID=$!
PIDS="$PIDS $PID"
wait_ready
ctl status --json | json_get 'j["mode"]' | grep -q demo || fail "demo mode"
kill -TERM "$PID"
wait_exit "$PID"; [ "$RC" = 0 ] || fail "demo exit"
ok "--demo"

# stderr that nobody reads (a pager left open, a terminal stopped with ^S)
# must not stop dreamos: lines it cannot take are counted, then noted.
mkfifo "$T/err.fifo"
sleep 300 <>"$T/err.fifo" &
HOLD=$!
PIDS="$PIDS $HOLD"
"$DREAMOS" --headless --runtime "$RT" </dev/null >/dev/null 2>"$T/err.fifo" &
PID=$!
PIDS="$PIDS $PID"
wait_ready
ctl agent spawn noisy -- sh -c 'seq 1 5000 >&2; exec sleep 60' >/dev/null || fail "spawn noisy"
# (a dreamos that waits on its stderr answers nothing: each ask is timed,
# long enough for a run under valgrind)
tctl() { timeout 30 "$DREAMOS" ctl --runtime "$RT" "$@"; }
dropped() { tctl status --json | jtest 'j["counts"]["log_stderr_dropped"] > 500'; }
wait_for 60 "stderr unread: lines counted as dropped" dropped
tctl status >/dev/null || fail "stderr unread: dreamos stopped answering"
last_line() { tctl logs --source noisy --grep 5000 | grep -Eq 'noisy: 5000( |$)'; }
wait_for 60 "stderr unread: the agent's last line in the log" last_line
cat "$T/err.fifo" >"$T/fifo.out" &
CAT=$!
PIDS="$PIDS $CAT"
tctl agent stop noisy >/dev/null
noted() { grep -q "log lines not shown here" "$T/fifo.out"; }
wait_for 10 "a note of the lines not shown on stderr" noted
kill -TERM "$PID"
wait_exit "$PID"
[ "$RC" = 0 ] || fail "stderr unread: SIGTERM exit status $RC"
kill "$HOLD" "$CAT" 2>/dev/null
ok "stderr that nobody reads: dreamos answers, drops and counts lines there, notes them later"

# An agent's stderr cannot fake a log line or drive the terminal: control
# characters are shown as escapes on stderr and by `logs`.
start_headless
ctl agent spawn esc -- sh -c 'printf "fake\033[2J\033]0;t\007 end\n" >&2; exec sleep 60' >/dev/null || fail "spawn esc"
esc_logged() { grep -q 'esc.*fake\\x1b\[2J\\x1b\]0;t\\x07 end' "$T/headless.err"; }
wait_for 10 "the agent's line, escaped, on stderr" esc_logged
ctl logs --source esc | grep -q 'fake\\x1b\[2J\\x1b\]0;t\\x07 end' || fail "logs: $(ctl logs --source esc)"
LC_ALL=C grep -q "$(printf '\033')" "$T/headless.err" && fail "an ESC byte reached stderr"
ctl logs --source esc | LC_ALL=C grep -q "$(printf '\033')" && fail "an ESC byte reached logs"
kill -TERM "$PID"
wait_exit "$PID"
ok "control characters from an agent are shown as escapes (stderr, logs)"
