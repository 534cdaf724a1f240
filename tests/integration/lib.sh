# lib.sh — shared by the integration tests: a fresh temporary runtime per
# test, helpers to start the real binary and drive it with `dreamos ctl`,
# and cleanup of every process started.
set -u
: "${DREAMOS:?DREAMOS must point at the dreamos binary (make check sets it)}"

T=$(mktemp -d "${TMPDIR:-/tmp}/dreamos-it.XXXXXX")
RT="$T/rt"
PIDS=""
export XDG_CONFIG_HOME="$T/xdg-config" DREAMOS_CONFIG="" DREAMOS_RUNTIME=""

# is_ours PID WORD: process PID exists and its command line holds WORD.  A
# pid an agent recorded long ago may be another program's by now: the suite
# starts enough processes to wrap pid_max (32768 on the CI machine), and
# bus.sh once counted a reused pid as a leftover agent and, cleaning up,
# killed it: another test's Chromium.
is_ours() {
	kill -0 "$1" 2>/dev/null || return 1
	[ -r "/proc/$1/cmdline" ] || return 0
	tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -F -- "$2"
}

cleanup() {
	for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
	for p in $PIDS; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$p" 2>/dev/null
	done
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/*.err; do
		[ -f "$f" ] || continue
		echo "--- $f" >&2
		# a sanitizer's report from its start (its end is only the summary)
		n=$(grep -n -m 1 -E '^(==[0-9]+==ERROR|SUMMARY): |runtime error:' "$f" | cut -d: -f1)
		if [ -n "$n" ]; then sed -n "$n,$((n + 40))p" "$f" >&2; else tail -n 30 "$f" >&2; fi
	done
	exit 1
}
ok() { echo "ok - $*"; }

# start_headless [ARGS...]: starts dreamos --headless on $RT, sets $PID and
# waits until its control socket answers.
start_headless() {
	"$DREAMOS" --headless --runtime "$RT" "$@" </dev/null >"$T/headless.out" 2>"$T/headless.err" &
	PID=$!
	PIDS="$PIDS $PID"
	wait_ready
}

# wait_ready: until `ctl status` answers (30 s at most).
wait_ready() {
	i=0
	while [ $i -lt 600 ]; do
		if [ -S "$RT/dreamos.sock" ] && ctl status >/dev/null 2>&1; then return 0; fi
		kill -0 "$PID" 2>/dev/null || fail "dreamos exited during startup"
		sleep 0.05
		i=$((i + 1))
	done
	fail "dreamos did not answer on $RT/dreamos.sock"
}

# start_stub SCRIPT [ARGS...]: starts the local stand-in
# tests/helpers/SCRIPT (it exits when its stdin, the fifo held open on fd
# 9, closes), sets STUB, and waits for the port(s) it prints first on
# $T/stub.out (30 s at most: a loaded CI machine can take seconds).
start_stub() {
	ss_script=$1
	shift
	mkfifo "$T/stub.in"
	"${PYTHON3:-python3}" "${top_srcdir:-.}/tests/helpers/$ss_script" "$@" \
		<"$T/stub.in" >"$T/stub.out" 2>"$T/stub.err" &
	STUB=$!
	PIDS="$PIDS $STUB"
	exec 9>"$T/stub.in"
	wait_for 30 "the stand-in $ss_script to start" test -s "$T/stub.out"
}

# wait_exit PID [SECONDS]: waits for the process (a child of this shell) to
# end and sets RC to its exit status.
wait_exit() {
	n=$(( ${2:-5} * 20 ))
	i=0
	while kill -0 "$1" 2>/dev/null && [ $i -lt $n ]; do sleep 0.05; i=$((i + 1)); done
	kill -0 "$1" 2>/dev/null && fail "process $1 did not exit"
	wait "$1"
	RC=$?
}

ctl() { "$DREAMOS" ctl --runtime "$RT" "$@"; }

# jtest PYEXPR: true if the Python expression holds over the JSON on stdin
# as j (json and re are imported).
jtest() {
	"${PYTHON3:-python3}" -c "import json,re,sys
j=json.load(sys.stdin)
sys.exit(0 if ($1) else 1)" 2>/dev/null
}

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds; fails the test
# (saying WHAT) after SECONDS.
wait_for() {
	wf_secs=$1 wf_what=$2
	shift 2
	wf_end=$(($(date +%s) + wf_secs))
	until "$@"; do
		[ "$(date +%s)" -le "$wf_end" ] || fail "timed out (${wf_secs}s) waiting for $wf_what"
		sleep 0.05
	done
}

# json_get EXPR: reads JSON on stdin and prints the Python expression EXPR
# evaluated on it as j (fails the test if stdin is not JSON).
json_get() {
	"${PYTHON3:-python3}" -c "import json,sys; j=json.load(sys.stdin); print($1)" ||
		fail "not JSON or no $1"
}
