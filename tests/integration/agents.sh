#!/bin/sh
# agents.sh — agent supervision end to end, with tests/agents/probe.py as the
# agent: config agents start at launch in file order, agent spawn / find /
# pause / resume / stop / restart, kill -9 → backoff → ready again, restart
# intensity → failed, a hung agent restarted, SIGKILL escalation, hello
# timeout, restart never, a missing program, shutdown leaving no process
# behind, and spawned agents remembered across a restart.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
PYBIN=$(command -v "$PY") || fail "no $PY"
PROBE=$(cd "${top_srcdir:-.}/tests/agents" && pwd)/probe.py
[ -f "$PROBE" ] || fail "no $PROBE"

# Every probe (config or spawned) inherits these through dreamos.
PROBE_LOGDIR="$T/plog"
PROBE_PIDFILE="$T/pids"
export PROBE_LOGDIR PROBE_PIDFILE
mkdir -p "$PROBE_LOGDIR"
: >"$PROBE_PIDFILE"

# alive PID: true if the process exists and is not a zombie.
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	if [ -r "/proc/$1/stat" ]; then
		st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
		[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
		return
	fi
	return 0
}

# Whatever happens, no probe outlives the test.
agents_cleanup() {
	leftover=$(cat "$PROBE_PIDFILE" 2>/dev/null)
	cleanup
	for p in $leftover; do kill -KILL "$p" 2>/dev/null; done
}
trap agents_cleanup EXIT

# jtest PYEXPR: reads JSON on stdin; succeeds if PYEXPR (over j) is true.

# agent_is NAME PYEXPR: PYEXPR holds over `agent info NAME --json` as j.
agent_is() { ctl agent info "$1" --json 2>/dev/null | jtest "$2"; }

# wait_for SECONDS WHAT CMD [ARG]...: runs CMD until it succeeds.

# wait_agent NAME SECONDS PYEXPR: until PYEXPR holds over agent info NAME.
wait_agent() { wait_for "$2" "$1: $3 ($(ctl agent info "$1" --json 2>&1 | tr -d '\n '))" agent_is "$1" "$3"; }

# wait_state NAME STATE [SECONDS]
wait_state() { wait_agent "$1" "${3:-10}" "j['state'] == '$2'"; }

# field NAME KEY: one member of agent info NAME.
field() { ctl agent info "$1" --json | json_get "j['$2']"; }

# probe_saw NAME PYEXPR: a JSON line m received by probe NAME satisfies PYEXPR.
probe_saw() {
	"$PY" - "$PROBE_LOGDIR/$1.log" "$2" <<-'EOF'
	import json, sys
	try:
	    lines = open(sys.argv[1], "rb").read().splitlines()
	except OSError:
	    sys.exit(1)
	for line in lines:
	    try:
	        m = json.loads(line)
	    except ValueError:
	        continue
	    if isinstance(m, dict) and eval(sys.argv[2]):
	        sys.exit(0)
	sys.exit(1)
	EOF
}

# logs_have ARGS... -- TEXT: `ctl logs ARGS` prints a line containing TEXT.
logs_have() {
	lh_text=$1
	shift
	ctl logs --limit 1000 "$@" 2>/dev/null | grep -F -q -- "$lh_text"
}

cat >"$T/agents.yaml" <<EOF
bridge:
  enabled: false
extensions:
  load: []          # the core alone: no extensions' agents in the lists
agents:
  restart: on-failure
  backoff:
    initial: 0.1s
    factor: 2
    cap: 1s
    reset_after: 30s
  heartbeat_timeout: 1s
  hello_timeout: 1s
  stop_grace: 0.5s
  intensity:
    max: 3
    period: 30s
  list:
    - name: alpha
      command: $PYBIN
      args: [-u, $PROBE]
      capabilities: [cfgcap]
      env: {PROBE_MODE: normal, PROBE_CAPS: "hellocap,shared", PROBE_GRANDCHILD: "1"}
    - name: beta
      command: $PYBIN
      args: [-u, $PROBE]
      capabilities: [shared]
      env: {PROBE_MODE: normal}
    - name: slowpoke
      command: $PYBIN
      args: [-u, $PROBE]
      backoff: {initial: 2s}
      env: {PROBE_MODE: normal}
    - name: stubborn
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: ignore-term}
EOF

start_headless --config "$T/agents.yaml"

# ---- config agents ------------------------------------------------------

for a in alpha beta slowpoke stubborn; do wait_state $a ready; done
ctl agent list --json | jtest "[a['name'] for a in j] == ['alpha', 'beta', 'slowpoke', 'stubborn']" ||
	fail "agent list order: $(ctl agent list)"
ctl agent list --json | jtest "all(a['state'] == 'ready' and a['pid'] for a in j)" ||
	fail "config agents not all ready with a pid: $(ctl agent list)"
ctl logs --grep "stopped -> starting" --json --limit 100 |
	jtest "[r['source'] for r in j][:4] == ['alpha', 'beta', 'slowpoke', 'stubborn']" ||
	fail "start order: $(ctl logs --grep 'stopped -> starting')"
ok "config agents start at launch, in file order, and are ready"

agent_is alpha "j['source'] == 'config' and j['version'] == 'probe-1' and j['session']" ||
	fail "agent info alpha: $(ctl agent info alpha)"
agent_is alpha "sorted(j['capabilities']) == ['cfgcap', 'hellocap', 'shared']" ||
	fail "capabilities are config ∪ hello: $(ctl agent info alpha)"
ctl agent find hellocap --json | jtest "[a['name'] for a in j] == ['alpha']" || fail "find hellocap"
ctl agent find cfgcap --json | jtest "[a['name'] for a in j] == ['alpha']" || fail "find cfgcap"
ctl agent find shared --json | jtest "sorted(a['name'] for a in j) == ['alpha', 'beta']" ||
	fail "find shared: $(ctl agent find shared)"
ctl agent find nosuchcap --json | jtest "j == []" || fail "find nosuchcap"
ctl agent find hellocap | grep -q '^alpha ' || fail "find (text): $(ctl agent find hellocap)"
ok "agent find: capabilities from hello ∪ config"

# ---- agent spawn --------------------------------------------------------

ctl agent spawn p1 --cap spawncap --env PROBE_MODE=normal -- "$PYBIN" -u "$PROBE" >"$T/spawn.out" 2>&1 ||
	fail "agent spawn p1: $(cat "$T/spawn.out")"
grep -q "agent p1 spawned" "$T/spawn.out" || fail "spawn message: $(cat "$T/spawn.out")"
p1_listed_ready() { ctl agent list --json | jtest "any(a['name'] == 'p1' and a['state'] == 'ready' for a in j)"; }
wait_for 10 "p1 ready in agent list" p1_listed_ready
agent_is p1 "j['source'] == 'spawn' and j['capabilities'] == ['spawncap'] and j['restart'] == 'on-failure'" ||
	fail "agent info p1: $(ctl agent info p1)"
ctl agent find spawncap --json | jtest "[a['name'] for a in j] == ['p1']" || fail "find spawncap"
ok "agent spawn: p1 ready in agent list --json, found by its capability"

ctl agent spawn p1 --env PROBE_MODE=normal -- "$PYBIN" -u "$PROBE" >"$T/taken.out" 2>"$T/taken.err"
rc=$?
[ $rc -eq 1 ] || fail "spawn of a taken name: exit $rc, want 1"
grep -q "agent 'p1' already exists" "$T/taken.err" || fail "taken-name message: $(cat "$T/taken.err")"
[ "$(wc -l <"$T/taken.err")" -eq 1 ] || fail "taken-name: one line wanted: $(cat "$T/taken.err")"
agent_is p1 "j['state'] == 'ready' and j['restarts'] == 0" || fail "p1 disturbed by the second spawn"
ok "agent spawn of a taken name: exit 1, $(cat "$T/taken.err")"

# ---- pause / resume -----------------------------------------------------

ctl agent pause p1 >/dev/null || fail "agent pause p1"
wait_state p1 paused 5
wait_for 5 "p1 got command pause" probe_saw p1 "m.get('type') == 'command' and m.get('name') == 'pause'"
ctl agent find spawncap --json | jtest "j == []" || fail "a paused agent is not offered by agent find"
ctl agent pause p1 >/dev/null 2>"$T/pause2.err" && fail "pausing a paused agent must fail"
grep -q "already paused" "$T/pause2.err" || fail "second pause: $(cat "$T/pause2.err")"
ctl agent resume p1 >/dev/null || fail "agent resume p1"
wait_state p1 ready 5
wait_for 5 "p1 got command resume" probe_saw p1 "m.get('type') == 'command' and m.get('name') == 'resume'"
ctl agent resume p1 >/dev/null 2>&1 && fail "resuming a ready agent must fail"
ok "agent pause / resume: paused then ready, the probe got command pause and resume"

# ---- kill -9: backoff, then ready again ---------------------------------

old=$(field slowpoke pid)
kill -KILL "$old"
wait_state slowpoke backoff 5
agent_is slowpoke "re.fullmatch(r'restart in [0-9.]+ s, attempt 1', j['info']) and j['attempt'] == 1 and j['restarts'] == 1 and j['next_restart_s'] > 0 and j['pid'] is None" ||
	fail "slowpoke in backoff: $(ctl agent info slowpoke)"
ctl agent info slowpoke | grep -Eq 'restart in [0-9.]+ s, attempt 1' ||
	fail "agent info (text) in backoff: $(ctl agent info slowpoke)"
ctl agent list | grep '^slowpoke ' | grep -Eq 'backoff .*restart in [0-9.]+ s, attempt 1' ||
	fail "agent list (text) in backoff: $(ctl agent list)"
wait_agent slowpoke 10 "j['state'] == 'ready' and j['pid'] not in (None, $old)"
agent_is slowpoke "j['restarts'] == 1 and j['last_signal'] == 9" || fail "slowpoke after restart: $(ctl agent info slowpoke)"
alive "$old" && fail "old slowpoke pid $old still alive"
ok "kill -9: backoff ('restart in ... s, attempt 1'), then ready again, restarts 1"

# ---- restart intensity: the 4th crash within the period → failed -----------

for n in 1 2 3; do
	old=$(field beta pid)
	kill -KILL "$old"
	wait_agent beta 10 "j['state'] == 'ready' and j['pid'] not in (None, $old) and j['restarts'] == $n"
done
agent_is beta "j['attempt'] == 3" || fail "beta attempt after 3 crashes: $(ctl agent info beta)"
old=$(field beta pid)
kill -KILL "$old"
wait_state beta failed 10
agent_is beta "j['pid'] is None and j['restarts'] == 3" || fail "beta failed: $(ctl agent info beta)"
logs_have "restart intensity" --level error --source beta ||
	fail "no error log about the restart intensity: $(ctl logs --source beta)"
ctl logs --level error --json --limit 1000 |
	jtest "any(r['source'] == 'beta' and r['level'] == 'error' and '-> failed' in r['msg'] for r in j)" ||
	fail "error log of the failure: $(ctl logs --level error)"
ctl agent find shared --json | jtest "[a['name'] for a in j] == ['alpha']" || fail "a failed agent is not found"
ok "restart intensity: 3 restarts, then failed with an error log"

ctl agent restart beta >/dev/null || fail "agent restart beta"
wait_agent beta 10 "j['state'] == 'ready' and j['pid'] is not None"
agent_is beta "j['attempt'] == 0" || fail "agent restart resets the attempt: $(ctl agent info beta)"
ok "agent restart brings a failed agent back"

# ---- a hung agent goes unhealthy and is restarted -------------------------

ctl agent spawn hang --env PROBE_MODE=hang -- "$PYBIN" -u "$PROBE" >/dev/null || fail "spawn hang"
wait_state hang ready 10
old=$(field hang pid)
wait_agent hang 10 "j['restarts'] >= 1 and j['pid'] not in (None, $old)"
logs_have "ready -> unhealthy: no heartbeat" --source hang ||
	fail "no unhealthy transition: $(ctl logs --source hang)"
agent_is hang "j['last_exit'] == 'unhealthy'" || fail "hang last_exit: $(ctl agent info hang)"
alive "$old" && fail "the hung probe $old was not ended"
ctl agent stop hang >/dev/null 2>&1
wait_state hang stopped 10
ok "a hung agent: unhealthy, ended and restarted"

# ---- agent stop of an agent that ignores it: SIGKILL escalation -------------

old=$(field stubborn pid)
ctl agent stop stubborn >"$T/stop.out" || fail "agent stop stubborn"
grep -q "stopping stubborn" "$T/stop.out" || fail "stop message: $(cat "$T/stop.out")"
wait_state stubborn stopped 10
agent_is stubborn "j['pid'] is None and j['last_signal'] == 9" || fail "stubborn after stop: $(ctl agent info stubborn)"
alive "$old" && fail "stubborn pid $old still alive after agent stop"
wait_for 5 "stubborn ignored command stop" grep -q "^# ignoring stop" "$PROBE_LOGDIR/stubborn.log"
logs_have "SIGKILL" --source stubborn || fail "no SIGKILL escalation log: $(ctl logs --source stubborn)"
ok "agent stop: command stop and SIGTERM ignored, SIGKILL, stopped, pid $old gone"

# ---- no hello within hello_timeout ---------------------------------------

ctl agent spawn nohello --env PROBE_MODE=nohello -- "$PYBIN" -u "$PROBE" >/dev/null || fail "spawn nohello"
wait_state nohello starting 5
old=$(field nohello pid)
wait_agent nohello 10 "j['restarts'] >= 1 and j['last_exit'] == 'no hello'"
logs_have "no hello within 1.0 s" --source nohello || fail "no hello-timeout log: $(ctl logs --source nohello)"
logs_have "starting -> backoff: no hello (signal 9)" --source nohello ||
	fail "the hello timeout is not a failed start: $(ctl logs --source nohello)"
alive "$old" && fail "nohello pid $old still alive"
ctl agent stop nohello >/dev/null 2>&1
wait_state nohello stopped 10
ok "no hello: killed after hello_timeout, counted as a failed start"

# ---- restart never -------------------------------------------------------

ctl agent spawn exit1 --restart never --env PROBE_MODE=exit-now --env PROBE_EXIT=1 -- "$PYBIN" -u "$PROBE" >/dev/null ||
	fail "spawn exit1"
wait_state exit1 failed 10
agent_is exit1 "j['restarts'] == 0 and j['last_exit_status'] == 1 and j['restart'] == 'never'" ||
	fail "exit1: $(ctl agent info exit1)"
ctl agent spawn exit0 --restart never --env PROBE_MODE=exit-now --env PROBE_EXIT=0 --env PROBE_EXIT_AFTER_HELLO=1 -- "$PYBIN" -u "$PROBE" >/dev/null ||
	fail "spawn exit0"
wait_state exit0 stopped 10
agent_is exit0 "j['restarts'] == 0 and j['last_exit_status'] == 0" || fail "exit0: $(ctl agent info exit0)"
ok "restart never: exit 1 → failed, clean exit 0 → stopped, no restart"

# ---- a program that does not exist ---------------------------------------

ctl agent spawn ghost --restart never -- "$T/no-such-program" >"$T/ghost.out" 2>&1 &&
	fail "a program that does not exist was accepted"
grep -q "agent spawn: cannot run '$T/no-such-program': No such file or directory" "$T/ghost.out" ||
	fail "no-such-program: $(cat "$T/ghost.out")"
ctl agent spawn ghost --restart never -- no-such-program-on-path >"$T/ghost2.out" 2>&1 &&
	fail "a name not on the PATH was accepted"
grep -q "cannot run 'no-such-program-on-path': not found on the PATH" "$T/ghost2.out" ||
	fail "not on the PATH: $(cat "$T/ghost2.out")"
ctl agent spawn ghost --restart never -- "$T" >"$T/ghost3.out" 2>&1 && fail "a directory was accepted"
grep -q "Is a directory" "$T/ghost3.out" || fail "directory: $(cat "$T/ghost3.out")"
ctl agent info ghost >/dev/null 2>&1 && fail "a refused spawn created the agent"
ctl agent spawn 'bad/name' -- "$PYBIN" >"$T/badname.out" 2>&1
[ $? -eq 2 ] || fail "an invalid agent name must be a usage error (exit 2)"
grep -q "agent spawn: invalid agent name 'bad/name'" "$T/badname.out" || fail "bad name: $(cat "$T/badname.out")"
# A program that goes away after the spawn: the start fails and says why.
printf '#!/bin/sh\nexit 1\n' >"$T/vanishing"
chmod +x "$T/vanishing"
ctl agent spawn ghost --restart never -- "$T/vanishing" >/dev/null || fail "spawn ghost"
wait_state ghost failed 5
rm "$T/vanishing"
ctl agent restart ghost >/dev/null 2>&1
wait_for 5 "ghost's 'cannot start' error" logs_have "cannot start" --level error --source ghost
logs_have "vanishing" --level error --source ghost || fail "the error names the program"
agent_is ghost "j['state'] == 'failed'" || fail "ghost: $(ctl agent info ghost)"
ok "missing program: agent spawn refuses it (a path, a name not on the PATH, a directory; an invalid name: exit 2); one gone after the spawn fails with '$(ctl logs --level error --source ghost | grep -o 'cannot start.*' | head -n 1)'"

# ---- agent stop: command stop, clean exit --------------------------------

old=$(field p1 pid)
ctl agent stop p1 >/dev/null || fail "agent stop p1"
wait_state p1 stopped 5
wait_for 5 "p1 got command stop" probe_saw p1 "m.get('type') == 'command' and m.get('name') == 'stop'"
agent_is p1 "j['last_exit_status'] == 0 and j['last_signal'] == 0 and j['pid'] is None" ||
	fail "p1 after stop: $(ctl agent info p1)"
alive "$old" && fail "p1 pid $old still alive"
ctl agent stop p1 >/dev/null 2>"$T/stop2.err" && fail "stopping a stopped agent must fail"
grep -q "not running" "$T/stop2.err" || fail "second stop: $(cat "$T/stop2.err")"
ok "agent stop: command stop, exit 0, stopped"

# ---- shutdown leaves no process behind -----------------------------------

ctl agent spawn keeper --cap keep --env PROBE_MODE=normal -- "$PYBIN" -u "$PROBE" >/dev/null || fail "spawn keeper"
ctl agent restart stubborn >/dev/null || fail "agent restart stubborn"
# Three more that ignore command stop and SIGTERM: each needs 2 x
# stop_grace (0.5 s) and SIGKILL.  Asked all at once, the shutdown takes
# about 1 s, not 4 x 1 s.
for s in stub2 stub3 stub4; do
	ctl agent spawn $s --env PROBE_MODE=ignore-term -- "$PYBIN" -u "$PROBE" >/dev/null || fail "spawn $s"
done
wait_state keeper ready 10
for s in stubborn stub2 stub3 stub4; do wait_state $s ready 10; done
grep -q "^# child pid=" "$PROBE_LOGDIR/alpha.log" || fail "alpha did not start its grandchild"
child=$(sed -n 's/^# child pid=//p' "$PROBE_LOGDIR/alpha.log" | tail -n 1)
alive "$child" || fail "alpha's grandchild $child is not running"
npids=$(wc -l <"$PROBE_PIDFILE")
t0=$(date +%s%N)
kill -TERM "$PID"
wait_exit "$PID" 15
t1=$(date +%s%N)
[ "$RC" = 0 ] || fail "shutdown exit status $RC"
ms=$(((t1 - t0) / 1000000))
[ "$ms" -lt 2500 ] || fail "shutdown with 4 agents ignoring SIGTERM took $ms ms (stop_grace 0.5 s: they are stopped one after the other)"
grep -q "stopping .* agents (asked in reverse start order, all at once)" "$T/headless.err" ||
	fail "no shutdown log line: $(grep -i stopping "$T/headless.err")"
left=""
for p in $(cat "$PROBE_PIDFILE"); do
	alive "$p" && left="$left $p"
done
[ -z "$left" ] || fail "processes left after shutdown:$left ($(ps -o pid,stat,args -p "$(echo $left | tr ' ' ,)" 2>&1))"
ok "shutdown (SIGTERM) in $ms ms with 4 agents ignoring it (stop_grace 0.5 s each, asked all at once): exit 0, none of the $npids agent processes (grandchild included) left"

# ---- remembered across a restart -----------------------------------------

: >"$PROBE_PIDFILE"
start_headless --config "$T/agents.yaml"
wait_state keeper ready 10
agent_is keeper "j['source'] == 'spawn' and j['capabilities'] == ['keep']" || fail "keeper after restart: $(ctl agent info keeper)"
agent_is p1 "j['state'] == 'stopped'" || fail "p1 was stopped by the captain and must stay stopped: $(ctl agent info p1)"
ctl agent list --json | jtest "[a['name'] for a in j][:4] == ['alpha', 'beta', 'slowpoke', 'stubborn']" ||
	fail "agent list after restart: $(ctl agent list)"
for a in alpha beta slowpoke stubborn; do wait_state $a ready 10; done
ctl agent find keep --json | jtest "[a['name'] for a in j] == ['keeper']" || fail "find keep after restart"
ok "spawned agents are remembered across a restart (keeper ready, p1 still stopped)"

ctl quit >/dev/null || fail "quit"
wait_exit "$PID" 15
[ "$RC" = 0 ] || fail "quit exit status $RC"
for p in $(cat "$PROBE_PIDFILE"); do
	alive "$p" && fail "process $p left after quit"
done
ok "quit: no agent process left"
