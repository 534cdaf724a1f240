#!/bin/sh
# protocol.sh — bad CellPhone input from tests/agents/probe.py agents: each
# kind of bad line gets the documented `error` reply (code, and ref echoed),
# lines that close the connection do, "16 in a row" is counted as documented,
# the handshake errors, and a flood of 10000 log lines is all absorbed —
# while the orchestrator and a well-behaved agent stay unaffected.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
PYBIN=$(command -v "$PY") || fail "no $PY"
PROBE=$(cd "${top_srcdir:-.}/tests/agents" && pwd)/probe.py
[ -f "$PROBE" ] || fail "no $PROBE"

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

proto_cleanup() {
	leftover=$(cat "$PROBE_PIDFILE" 2>/dev/null)
	cleanup
	for p in $leftover; do kill -KILL "$p" 2>/dev/null; done
}
trap proto_cleanup EXIT

# Checks that find a bug in dreamos do not stop the others: they are
# counted, and the test fails at the end.
NBAD=0 MARK=0
bad() {
	echo "not ok - $*" >&2
	NBAD=$((NBAD + 1))
}
# clean MESSAGE: ok MESSAGE if no check failed since the last clean.
clean() {
	[ "$NBAD" -eq "$MARK" ] && ok "$*"
	MARK=$NBAD
}

# jtest PYEXPR: reads JSON on stdin; succeeds if PYEXPR (over j) is true.

agent_is() { ctl agent info "$1" --json 2>/dev/null | jtest "$2"; }

# poll SECONDS CMD [ARG]...: runs CMD until it succeeds; 1 on timeout.
poll() {
	po_end=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -le "$po_end" ] || return 1
		sleep 0.05
	done
}

wait_state() {
	poll "${3:-10}" agent_is "$1" "j['state'] == '$2'" ||
		fail "timed out waiting for $1 to be $2: $(ctl agent info "$1" 2>&1)"
}

# errors NAME: the error replies probe NAME received, as a JSON list of
# [code, ref-or-None, detail]; a '#' line notes the end of the connection.
errors() {
	"$PY" - "$PROBE_LOGDIR/$1.log" <<-'EOF'
	import json, sys
	out = []
	try:
	    lines = open(sys.argv[1], "rb").read().splitlines()
	except OSError:
	    lines = []
	for line in lines:
	    try:
	        m = json.loads(line)
	    except ValueError:
	        continue
	    if isinstance(m, dict) and m.get("type") == "error":
	        out.append([m.get("code"), m.get("ref"), m.get("detail")])
	print(json.dumps(out))
	EOF
}

# got NAME PYEXPR: PYEXPR holds over errors NAME, as e.
got() { errors "$1" | "$PY" -c "import json,sys; e=json.load(sys.stdin); sys.exit(0 if ($2) else 1)"; }

# has_error NAME CODE [REF]: probe NAME got an error CODE (echoing REF).
has_error() {
	if [ $# -ge 3 ]; then
		got "$1" "any(c == '$2' and r == '$3' and d for c, r, d in e)"
	else
		got "$1" "any(c == '$2' and d for c, r, d in e)"
	fi
}

# ---- the scripts ---------------------------------------------------------

"$PY" - "$T" <<-'EOF'
import sys
t = sys.argv[1]
def w(name, lines):
    with open(t + "/" + name, "wb") as f:
        for l in lines:
            f.write(l + b"\n")
# Each answered with an error; the connection stays.
w("bad.txt", [
    b'{"type":"heartbeat"',                                      # bad_json
    b'{"type":"frobnicate","ref":"r-unknown"}',                  # unknown_type
    b'{"type":"log","level":"info","ref":"r-missing"}',          # missing_field
    b'{"type":"log","level":"info","msg":42,"ref":"r-badfield"}',# bad_field
    b'{"type":"log","level":"info","msg":"caf\xc3","ref":"r-utf8"}', # bad_utf8
    b'{"type":"log","level":"info","msg":"\xff\xfe"}',           # bad_utf8
    b'[1,2,3]',                                                  # not_object
    b'{"ref":"r-notype"}',                                       # missing_field
    b'{"type":"log","level":"loud","msg":"x","ref":"r-level"}',  # bad_field
    b'{"type":"heartbeat","load":"high","ref":"r-load"}',        # bad_field
    b'{"type":"hello","proto":1,"name":"bad","ref":"r-hello2"}', # duplicate_hello
    b'{"type":"log","level":"info","msg":"bad survived its bad lines","ref":"r-good"}',
])
# A line of exactly max_line (4096) bytes is taken; one byte more closes.
def logline(n, ref):
    head = b'{"type":"log","level":"info","ref":"' + ref + b'","msg":"'
    tail = b'"}'
    return head + b"m" * (n - len(head) - len(tail)) + tail
w("long.txt", [logline(4096, b"r-max"), logline(4097, b"r-over")])
# 16 bad lines in a row close the connection ...
w("spree.txt", [b'{"type":"heartbeat"'] * 16)
# ... 15, a good one, 15 more do not ...
w("reset.txt", [b'{"type":"heartbeat"'] * 15 + [b'{"type":"heartbeat"}'] + [b'{"type":"heartbeat"'] * 15)
# ... and any line answered with an error counts, not only unparsable ones.
w("dups.txt", [b'{"type":"hello","proto":1,"name":"dups"}'] * 16)
# The hello asks for protocol 2 (sent instead of the probe's own hello).
w("badproto.txt", [b'{"type":"hello","proto":2,"name":"badproto","ref":"r-proto"}'])
EOF
[ -s "$T/bad.txt" ] || fail "scripts not written"

cat >"$T/protocol.yaml" <<EOF
bridge:
  enabled: false
agents:
  max_line: 4KiB
  restart: never
  backoff: {initial: 0.1s, factor: 2, cap: 1s, reset_after: 30s}
  heartbeat_timeout: 1s
  hello_timeout: 2s
  stop_grace: 0.5s
  intensity: {max: 3, period: 30s}
  list:
    - name: steady
      command: $PYBIN
      args: [-u, $PROBE]
      restart: on-failure
      env: {PROBE_MODE: normal}
    - name: bad
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: script, PROBE_SCRIPT: $T/bad.txt}
    - name: long
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: script, PROBE_SCRIPT: $T/long.txt}
    - name: spree
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: script, PROBE_SCRIPT: $T/spree.txt}
    - name: reset
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: script, PROBE_SCRIPT: $T/reset.txt}
    - name: dups
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: script, PROBE_SCRIPT: $T/dups.txt}
    - name: early
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: hello-first}
    - name: twice
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: twohello}
    - name: wrong
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: wrongname}
    - name: big
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: bighello, PROBE_PAD: "8000"}
    - name: okbig
      command: $PYBIN
      args: [-u, $PROBE]
      env: {PROBE_MODE: bighello, PROBE_PAD: "3500"}
    - name: badproto
      command: $PYBIN
      args: [-u, $PROBE]
      hello_timeout: 30s
      env: {PROBE_MODE: script, PROBE_HELLO: "0", PROBE_SCRIPT: $T/badproto.txt}
EOF

start_headless --config "$T/protocol.yaml"
wait_state steady ready 10
steady_pid=$(ctl agent info steady --json | json_get 'j["pid"]')

# ---- errors that keep the connection -------------------------------------

poll 10 grep -q "^# script sent" "$PROBE_LOGDIR/bad.log" || fail "bad: script not sent"
want='["bad_json","unknown_type","missing_field","bad_field","bad_utf8","bad_utf8","not_object","missing_field","bad_field","bad_field","duplicate_hello"]'
if poll 5 got bad "[c for c, r, d in e] == $want"; then
	ok "bad lines: one error each, in order: $want"
else
	bad "bad lines: got $(errors bad), want codes $want"
fi
for cr in unknown_type:r-unknown missing_field:r-missing bad_field:r-badfield missing_field:r-notype \
	bad_field:r-level bad_field:r-load duplicate_hello:r-hello2; do
	if has_error bad "${cr%%:*}" "${cr#*:}"; then
		ok "bad: ${cr%%:*} echoes ref ${cr#*:}"
	else
		bad "bad: no ${cr%%:*} with ref ${cr#*:}: $(errors bad)"
	fi
done
MARK=$NBAD
got bad "all(isinstance(d, str) and d and '\n' not in d for c, r, d in e)" || bad "bad: every error needs a one-line detail"
got bad "any(c == 'missing_field' and 'msg' in d for c, r, d in e)" || bad "bad: missing_field detail names 'msg': $(errors bad)"
got bad "not any(r == 'r-good' for c, r, d in e)" || bad "bad: the good line was answered with an error"
survived() { ctl logs --source bad --grep "bad survived its bad lines" | grep -q survived; }
poll 5 survived ||
	bad "bad: the good line after the bad ones did not reach the log"
agent_is bad "j['state'] == 'ready' and j['restarts'] == 0" || bad "bad: not ready after bad lines: $(ctl agent info bad)"
clean "bad: still ready after $(errors bad | json_get 'len(j)') errors; its good line logged"

# ---- line length -----------------------------------------------------------

poll 10 agent_is long "j['state'] in ('failed', 'stopped')" || bad "long: not closed after a line over max_line: $(ctl agent info long)"
ctl logs --source long --grep mmmm --json | jtest "len(j) == 1 and len(j[0]['msg']) == 4096 - len('{\"type\":\"log\",\"level\":\"info\",\"ref\":\"r-max\",\"msg\":\"\"}')" ||
	bad "long: the line of exactly max_line bytes was not taken"
agent_is long "j['last_exit'] == 'line too long'" || bad "long: last_exit: $(ctl agent info long --json | json_get 'j["last_exit"]')"
if poll 2 has_error long line_too_long; then ok "long: line_too_long received before the disconnect"; else
	bad "long: the agent never saw line_too_long (got $(errors long))"; fi
clean "max_line: 4096 bytes taken, 4097 closes the connection"

poll 10 agent_is big "j['state'] in ('failed', 'stopped')" || bad "big: an oversized hello did not close: $(ctl agent info big)"
agent_is big "j['last_exit'] == 'line too long'" || bad "big: last_exit: $(ctl agent info big --json | json_get 'j["last_exit"]')"
if poll 2 has_error big line_too_long; then ok "big: line_too_long on an oversized hello"; else
	bad "big: the agent never saw line_too_long (got $(errors big))"; fi
wait_state okbig ready 10
clean "a hello over max_line closes; one under it with unknown members is taken"

# ---- too many errors ------------------------------------------------------

poll 10 agent_is spree "j['state'] in ('failed', 'stopped')" || bad "spree: 16 bad lines did not close: $(ctl agent info spree)"
agent_is spree "j['last_exit'] == 'protocol errors'" || bad "spree: last_exit: $(ctl agent info spree --json | json_get 'j["last_exit"]')"
if poll 2 got spree "[c for c, r, d in e] == ['bad_json'] * 16 + ['too_many_errors']"; then
	ok "spree: 16 bad_json then too_many_errors"
else
	bad "spree: want 16 bad_json and too_many_errors before the disconnect, got $(errors spree | json_get '[c for c, r, d in j]')"
fi
clean "16 bad lines in a row close the connection"

poll 10 got reset "len(e) == 30" || bad "reset: want 30 errors, got $(errors reset | json_get 'len(j)')"
agent_is reset "j['state'] == 'ready' and j['restarts'] == 0" || bad "reset: 15 + good + 15 must not close: $(ctl agent info reset)"
got reset "'too_many_errors' not in [c for c, r, d in e]" || bad "reset: too_many_errors after a reset"
clean "reset: an accepted line resets the count (15 bad, 1 good, 15 bad stays)"

poll 10 got dups "len(e) >= 16" || bad "dups: want 16 duplicate_hello errors, got $(errors dups)"
if poll 3 agent_is dups "j['state'] in ('failed', 'stopped')"; then
	ok "dups: 16 duplicate hellos close the connection"
else
	bad "dups: 16 lines answered with duplicate_hello in a row must close the connection (too_many_errors), state $(ctl agent info dups --json | json_get 'j["state"]')"
fi

# ---- handshake -----------------------------------------------------------

wait_state early ready 10
if poll 5 has_error early hello_first r-early; then ok "early: hello_first (ref r-early) for a line before hello, then ready"; else
	bad "early: want hello_first with ref r-early, got $(errors early)"; fi

wait_state twice ready 10
if poll 5 has_error twice duplicate_hello; then ok "twice: a second hello gets duplicate_hello and stays"; else
	bad "twice: no duplicate_hello: $(errors twice)"; fi
has_error twice duplicate_hello r-hello2 || bad "twice: duplicate_hello does not echo ref r-hello2: $(errors twice)"
agent_is twice "j['state'] == 'ready' and j['restarts'] == 0" || bad "twice: not ready: $(ctl agent info twice)"

poll 10 agent_is wrong "j['state'] in ('failed', 'stopped')" || bad "wrong: name mismatch did not close: $(ctl agent info wrong)"
agent_is wrong "j['last_exit'] == 'name mismatch' and j['session'] is None" || bad "wrong: $(ctl agent info wrong --json | json_get '(j["last_exit"], j["session"])')"
ctl logs --source wrong --level error | grep -q "hello says 'wrong-wrong'" || bad "wrong: no error log naming both names"
if poll 2 has_error wrong name_mismatch; then ok "wrong: name_mismatch, then closed"; else
	bad "wrong: the agent never saw name_mismatch (got $(errors wrong))"; fi

if poll 5 has_error badproto bad_proto r-proto; then ok "badproto: bad_proto (ref r-proto)"; else
	bad "badproto: want bad_proto with ref r-proto, got $(errors badproto)"; fi
if poll 3 agent_is badproto "j['state'] in ('failed', 'stopped')"; then ok "badproto: closed"; else
	bad "badproto: a hello with proto 2 must close the connection, state $(ctl agent info badproto --json | json_get 'j["state"]')"
fi

# ---- a flood of log lines --------------------------------------------------

ctl agent spawn flood --env PROBE_MODE=flood --env PROBE_COUNT=10000 -- "$PYBIN" -u "$PROBE" >/dev/null || fail "spawn flood"
# count_flood: prints how many distinct "flood N" records the log holds.
count_flood() {
	ctl logs --source flood --grep "flood " --limit 100000 --json |
		"$PY" -c "import json,sys; print(len({r['msg'] for r in json.load(sys.stdin) if r['msg'].startswith('flood ')}))"
}
flood_all() { [ "$(count_flood 2>/dev/null)" = 10000 ]; }
poll 45 flood_all || fail "flood: $(count_flood) of 10000 log lines in the log"
grep -q "^# flood done (10000 lines)" "$PROBE_LOGDIR/flood.log" || fail "flood: the probe did not finish"
ctl logs --source flood --grep "flood " --limit 100000 --json |
	jtest "[r['msg'] for r in j] == ['flood %d' % i for i in range(10000)]" || fail "flood: records lost, doubled or out of order"
kill -0 "$PID" || fail "dreamos died in the flood"
agent_is flood "j['state'] == 'ready' and j['restarts'] == 0" || fail "flood: $(ctl agent info flood)"
ok "flood: 10000 log lines absorbed, in order, none lost"

# ---- the orchestrator and the good agent are unaffected ---------------------

ctl status --json | jtest "j['pid'] == $PID" || fail "status does not answer"
agent_is steady "j['state'] == 'ready' and j['pid'] == $steady_pid and j['restarts'] == 0" ||
	fail "steady was disturbed: $(ctl agent info steady)"
ok "steady: still ready, same pid $steady_pid, no restart; status answers"

kill -TERM "$PID"
wait_exit "$PID" 15
[ "$RC" = 0 ] || fail "shutdown exit status $RC"
for p in $(cat "$PROBE_PIDFILE"); do
	alive "$p" && fail "process $p left after shutdown"
done
ok "shutdown: exit 0, no probe left"

[ "$NBAD" -eq 0 ] || fail "$NBAD protocol checks failed (see 'not ok' above)"
