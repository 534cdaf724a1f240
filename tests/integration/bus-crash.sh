#!/bin/sh
# bus-crash.sh — no message is lost when the orchestrator is killed.  A
# producer agent sends BUS_CRASH_N messages (default 10000) to a consumer
# agent as fast as the protocol allows and records the id of every `sent`
# answer; the consumer records every message before it acks it.  dreamos is
# killed with SIGKILL in the middle of the stream, BUS_CRASH_KILLS times
# (default 2: each time once BUS_CRASH_AT more `sent` came, default 300, and
# the consumer is receiving), and started again on the same runtime; its
# config agents come back with it, the producer sends the rest, the consumer
# drains its inbox.  Every id the producer recorded must reach the consumer
# at least once ("lost" must be 0); duplicates are allowed (at-least-once)
# and reported.  Ids must go on increasing across the restarts.  The runs
# alternate store.durability normal and strict (an fsync before each answer;
# the WAL checkpointed by the committing thread), starting with normal.
# bench/bus-crash.sh is the long version.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
PYBIN=$(command -v "$PY") || fail "no $PY"
BUSAGENT=$(cd "${top_srcdir:-.}/tests/agents" && pwd)/busagent.py
[ -f "$BUSAGENT" ] || fail "no $BUSAGENT"
if [ -z "${DREAMOS_SHARE:-}" ]; then
	DREAMOS_SHARE=$(cd "${top_srcdir:-.}/share" && pwd)
fi
N=${BUS_CRASH_N:-10000}
AT=${BUS_CRASH_AT:-300}
KILLS=${BUS_CRASH_KILLS:-2}
BUS_PIDFILE="$T/pids"
export BUS_PIDFILE DREAMOS_SHARE
: >"$BUS_PIDFILE"
SENT="$T/producer.log"
RECV="$T/consumer.log"

# Whatever happens, no agent outlives the test.
crash_cleanup() {
	leftover=$(cat "$BUS_PIDFILE" 2>/dev/null)
	cleanup
	for p in $leftover; do kill -KILL "$p" 2>/dev/null; done
}
trap crash_cleanup EXIT

alive() {
	kill -0 "$1" 2>/dev/null || return 1
	if [ -r "/proc/$1/stat" ]; then
		st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
		[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
		return
	fi
	return 0
}

# wait_for SECONDS WHAT CMD [ARG]...: runs CMD until it succeeds.

# count EV FILE: how many records of event EV the log FILE holds.
count() {
	c_n=$(grep -c "\"ev\":\"$1\"" "$2" 2>/dev/null)
	echo "${c_n:-0}"
}
nsent() { count sent "$SENT"; }
sent_at_least() { [ "$(nsent)" -ge "$1" ]; }
received_at_least() { [ "$(count msg "$RECV")" -ge "$1" ]; }
agents_gone() {
	for p in $(cat "$BUS_PIDFILE"); do alive "$p" && return 1; done
	return 0
}
verify() { "$PY" "$BUSAGENT" verify "$SENT" "$RECV" "$@"; }
drained() { ctl status --json 2>/dev/null | jtest "j['counts']['messages_pending'] == 0"; }

# crash_yaml DURABILITY: the config, with store.durability DURABILITY.
crash_yaml() {
	cat >"$T/crash.yaml" <<EOF
bridge:
  enabled: false
store:
  durability: $1
agents:
  hello_timeout: 5s
  stop_grace: 2s
  backoff: {initial: 0.1s, cap: 1s}
  list:
    - name: producer
      command: $PYBIN
      args: [-u, $BUSAGENT, produce]
      env: {BUS_LOG: "$SENT", BUS_TO: consumer, BUS_N: "$N"}
    - name: consumer
      command: $PYBIN
      args: [-u, $BUSAGENT, record]
      env: {BUS_LOG: "$RECV"}
EOF
}

k=0
while [ $k -lt "$KILLS" ]; do
	k=$((k + 1))
	dur=normal
	[ $((k % 2)) = 0 ] && dur=strict
	crash_yaml "$dur"
	target=$(($(nsent) + AT))
	rtarget=$(($(count msg "$RECV") + 1))
	start_headless --config "$T/crash.yaml"
	# Both at work: the producer sending, the consumer receiving.
	wait_for 20 "$target sent (producer log: $(tail -n 2 "$SENT" 2>/dev/null))" sent_at_least "$target"
	wait_for 20 "the consumer to receive" received_at_least "$rtarget"
	kill -KILL "$PID"
	wait "$PID" 2>/dev/null
	before=$(nsent)
	finished=0
	if [ "$before" -ge "$N" ]; then
		echo "# note: the producer had finished before kill $k"
		finished=1
	fi
	wait_for 10 "the agents to end after the orchestrator died ($(tr '\n' ' ' <"$BUS_PIDFILE"))" agents_gone
	maxbefore=$(verify --json | json_get 'j["max_sent_id"]')
	received=$(count msg "$RECV")
	ok "kill -9 #$k (durability $dur) after $before of $N sent (last id $maxbefore), $received received; the agents ended"
done

crash_yaml normal
start_headless --config "$T/crash.yaml"
wait_for 60 "the producer to finish ($(nsent) of $N sent)" sent_at_least "$N"
# Every sent message is stored before its `sent`: once none is pending, the
# consumer has acked (and so recorded) every one that was not lost.
wait_for 60 "no message pending ($(verify 2>&1))" drained
res=$(verify --json)
echo "$res" | jtest "j['sent'] == $N and j['sent_distinct'] == $N" || fail "producer log: $res"
echo "$res" | jtest "j['lost'] == 0" || fail "lost messages: $res"
# Messages are routed before their commit: an id seen before a crash must
# never come back on another message.
echo "$res" | jtest "j['reused'] == 0" || fail "an id came with two different bodies: $res"
lost=$(echo "$res" | json_get 'j["lost"]')
dups=$(echo "$res" | json_get 'j["duplicates"]')
unrec=$(echo "$res" | json_get 'j["unrecorded"]')
echo "lost $lost, duplicates $dups (sent $N, unrecorded but delivered $unrec)"
ok "every recorded id received at least once: lost $lost, duplicates $dups"

# Ids go on increasing across the restarts: the producer's ids, in the order
# it got them, only go up; those of the last producer are above every id
# before the last kill; status knows the last one.
"$PY" - "$SENT" "$maxbefore" "$finished" <<-'EOF' || fail "ids after the restart do not increase"
	import json, sys
	sent = []
	for line in open(sys.argv[1], "rb"):
	    try:
	        r = json.loads(line)
	    except ValueError:
	        continue
	    if r.get("ev") == "sent":
	        sent.append(r)
	ids = [r["id"] for r in sent]
	# (a producer that had finished before the last kill sent nothing after)
	after = [r["id"] for r in sent if r["pid"] == sent[-1]["pid"]] if sys.argv[3] == "0" else []
	sys.exit(0 if all(a < b for a, b in zip(ids, ids[1:]))
	         and all(i > int(sys.argv[2]) for i in after) else 1)
	EOF
last=$(ctl status --json | json_get 'j["counts"]["last_message_id"]')
top=$("$PY" "$BUSAGENT" verify "$SENT" "$RECV" --json | json_get 'j["max_sent_id"]')
[ "$last" -ge "$top" ] || fail "status last_message_id $last < last sent id $top"
ctl history consumer --limit 100000 --json |
	jtest "all(r['deliveries'] == 'consumer:acked' for r in j) and len(j) >= $N" ||
	fail "history: not every message to the consumer is acked"
A=$(ctl send consumer "after the kills" --json | json_get 'j["id"]')
[ "$A" -gt "$maxbefore" ] || fail "a message after the restart got id $A, not above $maxbefore"
ok "ids increase across the restart (before: up to $maxbefore; status last id $last); all acked in history"

ctl quit >/dev/null || fail "quit"
wait_exit "$PID" 15
[ "$RC" = 0 ] || fail "quit exit status $RC"
wait_for 10 "the agents to end after quit" agents_gone
ok "quit: exit 0, no agent process left"
