#!/bin/sh
# ext-reload.sh — hot reload through the real binary: dreamos --headless
# loads the counter test extension at start (its agent "tally" counts the
# messages it gets); while `dreamos ctl send` keeps sending numbered
# messages, a new build is moved over the .so (cp to a temporary name, then
# mv, as an install does).  The new version takes over by itself with the
# counters of the old one, and every message arrives exactly once (count
# and sum).  Then a build whose init fails is moved in: the old version
# keeps running with its state.  Finally `ext unload` sweeps its command
# and stops its agent, and `ext load` brings both back.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no $PY"
SO="${top_builddir:-.}/tests/ext/.libs"
for f in counter.so counter2.so counter_bad.so; do
	[ -f "$SO/$f" ] || { echo "skip: $SO/$f not built"; exit 77; }
done

# jtest PYEXPR: reads JSON on stdin; succeeds if PYEXPR (over j) is true.
# counter_is PYEXPR: PYEXPR holds over `counter --json` as j.
counter_is() { ctl counter --json 2>/dev/null | jtest "$1"; }
# wait_for SECONDS WHAT CMD [ARG]...: runs CMD until it succeeds.
logged() { grep -q "$1" "$T/headless.err"; }
# put FILE: moves a build over ext/counter.so, atomically.
put() {
	cp "$SO/$1" "$T/ext/.counter.so.new" || fail "cp $1"
	mv -f "$T/ext/.counter.so.new" "$T/ext/counter.so" || fail "mv $1"
}

mkdir -p "$T/ext"
put counter.so
cat >"$T/dreamos.yaml" <<EOF
bridge:
  enabled: false
agents:
  heartbeat_timeout: 0
extensions:
  dir: $T/ext
  load: [counter]
  counter:
    agent: tally
    tick_ms: 50
EOF

start_headless --config "$T/dreamos.yaml"
wait_for 10 "the counter extension" counter_is 'j["version"] == "1.0" and j["agents_up"] == 1'
ctl ext list | grep -q 'counter  *1\.0' || fail "ext list does not show counter 1.0"
ctl agent list | grep -q 'tally.*ready' || fail "tally is not ready"
# An in-process agent sends no heartbeats: no age is shown for it.
ctl agent info tally --json | jtest 'j["heartbeat_age_s"] is None and j["state"] == "ready"' ||
	fail "tally's heartbeat age: $(ctl agent info tally --json)"
ok "counter 1.0 loaded at start, its agent tally ready (no heartbeat age)"

ctl counter bump 5 >/dev/null || fail "counter bump"

# Messages flow while the file is replaced.
N=120
(
	i=1
	while [ $i -le $N ]; do
		ctl send tally m --body "{\"n\": $i}" >/dev/null 2>&1 || echo "send $i failed" >>"$T/send.err"
		i=$((i + 1))
	done
	echo done >"$T/send.done"
) &
SENDER=$!
wait_for 20 "the first messages" counter_is 'j["messages"] >= 20'
put counter2.so
wait_for 20 "version 2.0" counter_is 'j["version"] == "2.0"'
wait_for 60 "the sender" test -f "$T/send.done"
wait "$SENDER"
[ -s "$T/send.err" ] && fail "sends failed: $(cat "$T/send.err")"
SUM=$((N * (N + 1) / 2))
wait_for 20 "all $N messages" counter_is "j['messages'] >= $N"
sleep 0.3
counter_is "j['messages'] == $N and j['sum'] == $SUM" ||
	fail "messages lost or repeated: $(ctl counter --json)"
counter_is 'j["generation"] == 1 and j["bumps"] == 5 and j["agents_up"] == 1' ||
	fail "state not handed over: $(ctl counter --json)"
logged "reloaded counter 1.0 -> 2.0" || fail "no 'reloaded' log line"
ctl ext info counter --json | jtest 'j["reloads"] == 1' || fail "ext info: reloads is not 1"
ok "replaced while $N messages flowed: 2.0 took over, each message counted once, state kept"

# A new build that refuses to start: the old version keeps running.
put counter_bad.so
wait_for 10 "the failed reload" logged "is running again"
logged "this build of counter refuses to start" || fail "the reason is not logged"
counter_is "j['version'] == '2.0' and j['messages'] == $N and j['generation'] == 2" ||
	fail "old version not running with its state: $(ctl counter --json)"
ctl send tally m --body '{"n": 1}' >/dev/null || fail "send after the failed reload"
wait_for 10 "a message after the failed reload" counter_is "j['messages'] == $N + 1"
ok "a build whose init fails leaves the old version running, with its state"

# Unload sweeps; load brings it back.
ctl ext unload counter >/dev/null || fail "ext unload"
ctl counter >/dev/null 2>&1 && fail "the counter command survived the unload"
wait_for 5 "tally to stop" sh -c "'$DREAMOS' ctl --runtime '$RT' agent list | grep -q 'tally.*stopped'"
put counter.so
ctl ext load counter >/dev/null || fail "ext load"
wait_for 10 "counter back" counter_is 'j["version"] == "1.0" and j["agents_up"] == 1'
ok "ext unload sweeps the command and stops the agent; ext load brings them back"

ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
grep -q 'Sanitizer\|runtime error' "$T/headless.err" && fail "sanitizer report"
ok "clean shutdown"
