#!/bin/sh
# tasks-crash.sh — the task queue survives kill -9: dreamos --headless with two
# worker agents (share/agents/worker.py, 2 slots each), 20 tasks of 0.5 s
# submitted with `dreamos ctl task add`, SIGKILL while some run, a restart on
# the same runtime; then every task is done exactly once (state done, 20 of
# them, ids 1..20, none lost, none duplicated), the ones cut short ran
# again as a counted attempt, no worker outlived the crashed instance, and
# after a clean stop the database passes PRAGMA integrity_check.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
PYBIN=$(command -v "$PY") || fail "no $PY"
if [ -z "${DREAMOS_SHARE:-}" ]; then
	DREAMOS_SHARE=$(cd "${top_srcdir:-.}/share" && pwd)
fi
WORKER="$DREAMOS_SHARE/agents/worker.py"
[ -f "$WORKER" ] || fail "no $WORKER"
export DREAMOS_SHARE
N=20

# Worker pids seen, killed at the end whatever happens.
: >"$T/wpids"
tasks_cleanup() {
	leftover=$(cat "$T/wpids" 2>/dev/null)
	cleanup
	for p in $leftover; do kill -KILL "$p" 2>/dev/null; done
}
trap tasks_cleanup EXIT

# jtest PYEXPR: reads JSON on stdin; succeeds if PYEXPR (over j) is true.

# wait_for SECONDS WHAT CMD [ARG]...: runs CMD until it succeeds.

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

tasks_json() { ctl task list --json --limit 1000; }
# tasks_are PYEXPR: PYEXPR holds over the task list (j, oldest first).
tasks_are() { tasks_json 2>/dev/null | jtest "$1"; }
workers_ready() {
	ctl agent list --json 2>/dev/null |
		jtest "sum(1 for a in j if a['name'].startswith('worker-') and a['state'] in ('ready', 'busy')) == 2"
}
worker_pids() {
	ctl agent list --json | json_get "' '.join(str(a['pid']) for a in j if a['name'].startswith('worker-') and a.get('pid'))"
}

cat >"$T/dreamos.yaml" <<EOF
bridge:
  enabled: false
logging:
  level: debug               # every transition in the logs table (the journal read below)
tasks:
  default_retries: 3
  default_timeout: 60s
  backoff: {initial: 0.2s, cap: 1s}
agents:
  restart: on-failure
  backoff: {initial: 0.1s, cap: 1s}
  hello_timeout: 10s
  stop_grace: 2s
  list:
    - name: worker-1
      command: $PYBIN
      args: [-u, $WORKER, compute]
      env: {WORKER_MAX_TASKS: "2"}
      max_tasks: 2
    - name: worker-2
      command: $PYBIN
      args: [-u, $WORKER, compute]
      env: {WORKER_MAX_TASKS: "2"}
      max_tasks: 2
EOF

start_headless --config "$T/dreamos.yaml"
wait_for 20 "two ready workers" workers_ready
pids1=$(worker_pids)
echo "$pids1" >>"$T/wpids"
ok "dreamos with two workers (pids $pids1)"

i=1
while [ $i -le $N ]; do
	ctl task add "job $i" --cap compute --payload '{"duration": 0.5}' >"$T/add.out" 2>&1 ||
		fail "task add $i: $(cat "$T/add.out")"
	i=$((i + 1))
done
tasks_are "len(j) == $N and [t['id'] for t in j] == list(range(1, $N + 1))" ||
	fail "after submitting: $(tasks_json)"
ok "$N tasks submitted"

# Kill -9 while some are done, and some are running early in their run
# (progress at most 50%, so they cannot finish before the signal lands).
wait_for 20 "some tasks done and one early in its run" tasks_are \
	"sum(t['state'] == 'done' for t in j) >= 2 and any(t['state'] in ('assigned', 'running') and t['progress'] <= 50 for t in j)"
kill -KILL "$PID"
wait "$PID" 2>/dev/null
tasks_before=$("$PY" -c "
import sqlite3
db = sqlite3.connect('file:$RT/dreamos.db?mode=ro', uri=True)
print(' '.join('%s=%d' % r for r in db.execute('SELECT state, count(*) FROM tasks GROUP BY state')))
" 2>&1) || fail "reading the database after kill -9: $tasks_before"
ok "kill -9 with tasks in flight ($tasks_before)"

# The workers see EOF and leave; none is left behind.
for p in $pids1; do
	wait_for 10 "worker $p to exit after the crash" eval "! alive $p"
done
ok "no worker outlived the crashed instance"

start_headless --config "$T/dreamos.yaml"
grep -q "recovered [0-9]* unfinished tasks ([1-9][0-9]* were running and are queued again)" \
	"$T/headless.err" || fail "no recovery line: $(grep -i recover "$T/headless.err")"
worker_pids >>"$T/wpids" 2>/dev/null
wait_for 60 "all $N tasks done" tasks_are "len(j) == $N and all(t['state'] == 'done' for t in j)"
tasks_json >"$T/final.json"
jtest "[t['id'] for t in j] == list(range(1, $N + 1))" <"$T/final.json" ||
	fail "ids are not 1..$N: $(cat "$T/final.json")"
jtest "any(t['attempt'] >= 2 for t in j)" <"$T/final.json" ||
	fail "no task was run again after the crash: $(cat "$T/final.json")"
jtest "all(1 <= t['attempt'] <= 2 for t in j)" <"$T/final.json" ||
	fail "unexpected attempts: $(cat "$T/final.json")"
ok "all $N tasks done, ids 1..$N, the interrupted ones re-run ($(json_get 'sum(t["attempt"] >= 2 for t in j)' <"$T/final.json") of them)"

kill -TERM "$PID"
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "exit status $RC after SIGTERM"
ok "clean stop"

# On the stopped instance's database: integrity, the 20 tasks, and "done
# exactly once" — each task reached done in one of the two runs, never in
# both.  The logs table holds every transition of both instances, written
# in the same transaction as the task's new state, so a transition lost
# with the crash is lost from both.
"$PY" - "$RT/dreamos.db" "$N" >"$T/check.out" 2>&1 <<-'EOF' || fail "database check: $(cat "$T/check.out")"
	import collections, json, sqlite3, sys
	db = sqlite3.connect(sys.argv[1])
	n = int(sys.argv[2])
	ic = db.execute("PRAGMA integrity_check").fetchone()[0]
	if ic != "ok":
	    sys.exit("PRAGMA integrity_check: %s" % ic)
	rows = db.execute("SELECT id, state FROM tasks ORDER BY id").fetchall()
	if [r[0] for r in rows] != list(range(1, n + 1)) or any(r[1] != "done" for r in rows):
	    sys.exit("tasks: %s" % rows)
	done = collections.Counter()
	for (fields,) in db.execute("SELECT fields FROM logs WHERE source = 'tasks' AND fields IS NOT NULL"):
	    f = json.loads(fields)
	    if f.get("to") == "done":
	        done[f.get("task")] += 1
	if sorted(done) != list(range(1, n + 1)) or set(done.values()) != {1}:
	    sys.exit("done transitions per task: %s" % dict(done))
	print("ok")
	EOF
ok "PRAGMA integrity_check ok; tasks 1..$N all done, each done exactly once"
