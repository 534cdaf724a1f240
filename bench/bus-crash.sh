#!/bin/sh
# bench/bus-crash.sh — the long crash test of the UnifiedMessageSystem (the
# short one is tests/integration/bus-crash.sh, run by make check).
#
# A producer agent sends MESSAGES messages to a consumer agent as fast as the
# protocol allows and records the id of every `sent` answer (the message is
# durable from then on); the consumer records every message it receives
# before acking it.  dreamos is killed with SIGKILL ITERATIONS times, each
# time at a random moment: after a random number (MIN_GAP..MAX_GAP) of
# further `sent` answers, or, once the producer is done, a random delay
# (MIN_DELAY..MAX_DELAY seconds) after the start, while the consumer drains.
# Each time it is started again on the same runtime; the config agents come
# back with it and the producer goes on where it stopped.  After the last
# kill dreamos runs until the producer is done and the consumer has drained.
# Every id recorded as sent must have been received at least once.
# --iterations 0 is one long uninterrupted run.
#
# Usage: bench/bus-crash.sh [--iterations N] [--messages N] [--min-gap N]
#            [--max-gap N] [--min-delay S] [--max-delay S] [--seed N] [--keep]
# The same settings from the environment: BUS_ITERATIONS (default 10),
# BUS_MESSAGES (default 100000), BUS_MIN_GAP (1000), BUS_MAX_GAP (10000),
# BUS_MIN_DELAY (0.2), BUS_MAX_DELAY (1.5), BUS_SEED (default: from the
# clock).  --keep keeps the scratch directory.
# DREAMOS names the binary (default: _build/dreamos or ./dreamos of the tree,
# else dreamos in PATH; a private copy is run); PYTHON3 the interpreter
# (default python3).
#
# Prints one line per kill, then a summary:
#   iterations 10, messages 100000, sent 100000, received 100412,
#   lost 0, duplicates 412, unrecorded 57, reused 0, elapsed 31.2 s (drain 4.1 s)
# ("unrecorded": delivered, but dreamos died before it could answer `sent`,
# either after the commit or before it, since messages are routed first —
# allowed; "reused": ids that came with two different bodies — never).
# Exit status 0 if nothing was lost or reused, 1 if something was or the
# run failed, 2 on bad usage.
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
top_srcdir=${top_srcdir:-$top}
if [ -z "${DREAMOS:-}" ]; then
	for d in "$top/_build/dreamos" "$top/dreamos"; do
		if [ -x "$d" ]; then DREAMOS=$d; break; fi
	done
	[ -n "${DREAMOS:-}" ] || DREAMOS=$(command -v dreamos) ||
		{ echo "bus-crash: no dreamos binary: set DREAMOS" >&2; exit 2; }
fi
export DREAMOS
DREAMOS_ORIG=$DREAMOS

ITER=${BUS_ITERATIONS:-10}
N=${BUS_MESSAGES:-100000}
GMIN=${BUS_MIN_GAP:-1000}
GMAX=${BUS_MAX_GAP:-10000}
MIN=${BUS_MIN_DELAY:-0.2}
MAX=${BUS_MAX_DELAY:-1.5}
SEED=${BUS_SEED:-$(date +%s)}
KEEP=0
usage() {
	sed -n '/^# Usage:/,/^# The same/p' "$0" | sed '$d; s/^# //' >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--iterations) ITER=${2:?}; shift 2 ;;
	--messages) N=${2:?}; shift 2 ;;
	--min-gap) GMIN=${2:?}; shift 2 ;;
	--max-gap) GMAX=${2:?}; shift 2 ;;
	--min-delay) MIN=${2:?}; shift 2 ;;
	--max-delay) MAX=${2:?}; shift 2 ;;
	--seed) SEED=${2:?}; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage ;;
	*) echo "bus-crash: unknown argument '$1'" >&2; usage ;;
	esac
done
case "$ITER$N$SEED$GMIN$GMAX" in
*[!0-9]*) echo "bus-crash: iterations, messages, gaps and seed are integers" >&2; exit 2 ;;
esac
[ "$GMAX" -ge "$GMIN" ] || { echo "bus-crash: --max-gap < --min-gap" >&2; exit 2; }

. "$top_srcdir/tests/integration/lib.sh"
# A private copy, so that a rebuild of the tree during the run changes nothing.
cp "$DREAMOS" "$T/dreamos" || fail "cannot copy $DREAMOS"
DREAMOS=$T/dreamos

PY=${PYTHON3:-python3}
PYBIN=$(command -v "$PY") || fail "no $PY"
BUSAGENT="$top_srcdir/tests/agents/busagent.py"
[ -f "$BUSAGENT" ] || fail "no $BUSAGENT"
DREAMOS_SHARE=${DREAMOS_SHARE:-$top_srcdir/share}
BUS_PIDFILE="$T/pids"
export BUS_PIDFILE DREAMOS_SHARE
: >"$BUS_PIDFILE"
SENT="$T/producer.log"
RECV="$T/consumer.log"

bench_cleanup() {
	leftover=$(cat "$BUS_PIDFILE" 2>/dev/null)
	if [ "$KEEP" = 1 ]; then
		for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
		echo "bus-crash: kept $T" >&2
	else
		cleanup
	fi
	for p in $leftover; do kill -KILL "$p" 2>/dev/null; done
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

alive() {
	kill -0 "$1" 2>/dev/null || return 1
	if [ -r "/proc/$1/stat" ]; then
		st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
		[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
		return
	fi
	return 0
}
wait_for() {
	wf_secs=$1 wf_what=$2
	shift 2
	wf_end=$(($(date +%s) + wf_secs))
	until "$@"; do
		[ "$(date +%s)" -le "$wf_end" ] || fail "timed out (${wf_secs}s) waiting for $wf_what"
		sleep 0.02
	done
}
count() {
	c_n=$(grep -c "\"ev\":\"$1\"" "$2" 2>/dev/null)
	echo "${c_n:-0}"
}
nsent() { count sent "$SENT"; }
sent_at_least() { [ "$(nsent)" -ge "$1" ]; }
agents_gone() {
	for p in $(cat "$BUS_PIDFILE"); do alive "$p" && return 1; done
	return 0
}
verify() { "$PY" "$BUSAGENT" verify "$SENT" "$RECV" "$@"; }
drained() {
	ctl status --json 2>/dev/null |
		"$PY" -c "import json,sys; sys.exit(0 if json.load(sys.stdin)['counts']['messages_pending'] == 0 else 1)" 2>/dev/null
}
now() { date +%s.%N | cut -c1-14; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cat >"$T/crash.yaml" <<EOF
extensions: {load: []}
bridge:
  enabled: false
agents:
  hello_timeout: 10s
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

echo "bus-crash: dreamos $DREAMOS_ORIG, $N messages, $ITER kills (every $GMIN..$GMAX sent, or $MIN..$MAX s into the drain), seed $SEED"
# Line k: the gap and the delay of kill k.
PLAN=$(awk -v s="$SEED" -v n="$ITER" -v g0="$GMIN" -v g1="$GMAX" -v lo="$MIN" -v hi="$MAX" \
	'BEGIN { srand(s); for (i = 1; i <= n; i++) printf "%d %.3f\n", g0 + int(rand() * (g1 - g0 + 1)), lo + rand() * (hi - lo) }')
t0=$(now)
k=0
while [ $k -lt "$ITER" ]; do
	k=$((k + 1))
	set -- $(echo "$PLAN" | sed -n "${k}p")
	gap=$1 delay=$2
	before=$(nsent)
	start_headless --config "$T/crash.yaml"
	if [ "$before" -lt "$N" ]; then
		target=$((before + gap))
		[ "$target" -le "$N" ] || target=$N
		wait_for 120 "$target sent" sent_at_least "$target"
		how="after $(($(nsent) - before)) more sent"
	else
		sleep "$delay"
		how="$delay s after the start"
	fi
	kill -KILL "$PID"
	wait "$PID" 2>/dev/null
	wait_for 20 "the agents to end after kill $k" agents_gone
	echo "kill $k $how: sent $(nsent) of $N, received $(count msg "$RECV")"
done

start_headless --config "$T/crash.yaml"
t1=$(now)
wait_for 600 "the producer to finish ($(nsent) of $N)" sent_at_least "$N"
# Every sent message is stored before its `sent`: once none is pending, the
# consumer has acked (and so recorded) every one that was not lost.
wait_for 600 "no message pending" drained
drain=$(elapsed "$t1")
total=$(elapsed "$t0")
res=$(verify --json) || true
summary=$(echo "$res" | "$PY" -c "import json,sys; j=json.load(sys.stdin); print('sent %d, received %d, lost %d, duplicates %d, unrecorded %d, reused %d' % (j['sent'], j['received'], j['lost'], j['duplicates'], j['unrecorded'], j['reused']))")
echo "iterations $ITER, messages $N, $summary, elapsed $total s (drain $drain s)"
ctl quit >/dev/null || fail "quit"
wait_exit "$PID" 30
echo "$res" | "$PY" -c "import json,sys; sys.exit(0 if json.load(sys.stdin)['lost'] == 0 else 1)" ||
	fail "messages lost: $(verify)"
echo "$res" | "$PY" -c "import json,sys; sys.exit(0 if json.load(sys.stdin)['reused'] == 0 else 1)" ||
	fail "an id came with two different bodies: $(verify)"
