#!/bin/sh
# dreamscribe.sh — the Dreamscribe extension through the real binary, on a
# known corpus: captain notes (memory add, backdated with --at, tagged),
# devlog lines and a task result from a small agent.  Checks the bm25 order
# of `memory search --json` and its highlighted snippets, the --agent,
# --since and --limit filters, the order of task and agent threads (the
# thread window splits an agent's story), insights terms per day (from the
# FTS5 vocabulary), recall as a command and as a message to the recall
# agent, and that memory.db is private and survives a reload.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no $PY"
SO="${top_builddir:-.}/extensions/dreamscribe/.libs/dreamscribe.so"
[ -f "$SO" ] || { echo "skip: $SO not built"; exit 77; }

# jtest PYEXPR: reads JSON on stdin; succeeds if PYEXPR (over j) is true.
# wait_for SECONDS WHAT CMD [ARG]...: runs CMD until it succeeds.
# mem ARGS... PYEXPR: `ctl memory ARGS --json` satisfies PYEXPR.
mem_is() {
	mi_expr=$1
	shift
	ctl memory "$@" --json >"$T/mem.json" 2>"$T/mem.err" || return 1
	jtest "$mi_expr" <"$T/mem.json" 2>/dev/null
}
check() {
	ck_what=$1
	shift
	mem_is "$@" || fail "$ck_what: $("$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' <"$T/mem.json" 2>&1) $(cat "$T/mem.err")"
}

mkdir -p "$T/ext"
cp "$SO" "$T/ext/dreamscribe.so" || fail "cp $SO"
cat >"$T/dreamos.yaml" <<EOF
bridge:
  enabled: false
agents:
  heartbeat_timeout: 0
extensions:
  dir: $T/ext
  load: [dreamscribe]
  dreamscribe:
    thread_window_s: 3600
EOF

start_headless --config "$T/dreamos.yaml"
wait_for 10 "dreamscribe" sh -c "'$DREAMOS' ctl --runtime '$RT' memory stats >/dev/null 2>&1"
DB="$RT/extensions/dreamscribe/memory.db"
[ -f "$DB" ] || fail "no $DB"
[ "$(stat -c %a "$DB")" = 600 ] || fail "$DB is mode $(stat -c %a "$DB"), want 600"
ok "loaded; its own database $DB, mode 600"

# ---- the corpus: captain notes --------------------------------------------
add() { ctl memory add "$@" --json | json_get 'j["id"]'; }
N1=$(add "Postgres replication lag spiked during the nightly backup" --tags db,incident \
	--at 2026-01-05T09:00:00Z)
N2=$(add "Replication recovered after throttling the job" --tags db --at 2026-01-05T09:20:00Z)
N3=$(add "Reviewed the frontend bundle size" --tags frontend --at 2026-01-05T15:00:00Z)
N4=$(add "Kubernetes upgrade planned, kubernetes nodes drained" --tags k8s \
	--at 2026-01-06T10:00:00Z)
N5=$(add "Kubernetes cluster healthy again" --tags k8s --at 2026-01-06T10:30:00Z)
N6=$(add "deadlock deadlock in the scheduler: the deadlock detector fired twice" \
	--tags scheduler --at 2026-01-07T08:00:00Z)
N7=$(add "A long review of the scheduler queue, its fairness, its timeouts and one" \
	"deadlock seen in passing, among many other details of the week" --at 2026-01-07T08:10:00Z)
N8=$(add "Scheduler notes from ops" --tags deadlock --agent ops --at 2026-01-07T08:20:00Z)
[ -n "$N1" ] && [ -n "$N8" ] || fail "memory add gave no ids"
ok "8 notes added (ids $N1..$N8)"

# ---- search: bm25 order, snippets, filters ----------------------------------
check "search deadlock" \
	"[r['id'] for r in j['results']] == [$N6, $N8, $N7] and
	 j['results'][0]['score'] > j['results'][1]['score'] > j['results'][2]['score'] and
	 j['results'][0]['snippet'].count('[deadlock]') == 3 and
	 '[deadlock]' in j['results'][1]['tags_highlighted'] and
	 '[deadlock]' in j['results'][2]['snippet']" \
	search deadlock
ok "search by bm25: a note saying deadlock 3 times, a short note tagged deadlock, a long one saying it once; [highlighted] snippets"

check "search --agent ops" "[r['id'] for r in j['results']] == [$N8]" search deadlock --agent ops
check "search --limit 1" "[r['id'] for r in j['results']] == [$N6]" search deadlock --limit 1
check "search --since" "[r['id'] for r in j['results']] == [$N5]" \
	search kubernetes healthy --since 2026-01-06T10:15:00Z
check "search OR" "sorted(r['id'] for r in j['results']) == sorted([$N1, $N2, $N4, $N5])" \
	search "replication OR kubernetes"
check "search with punctuation" "[r['id'] for r in j['results']] == [$N4]" \
	search "kubernetes, nodes!"
ctl memory search deadlock | grep -q '^ *\[deadlock\] \[deadlock\]' || fail "text output: $(ctl memory search deadlock)"
ok "search: --agent, --limit, --since, FTS5 syntax, plain words; text output"

# ---- agent threads ------------------------------------------------------------
check "thread of N2" \
	"j['by'] == 'agent' and [f['id'] for f in j['fragments']] == [$N1, $N2]" thread "$N2"
check "thread of N3" "[f['id'] for f in j['fragments']] == [$N3]" thread "$N3"
check "story of captain" \
	"[[f['id'] for f in t['fragments']] for t in j['threads']] ==
	 [[$N1, $N2], [$N3], [$N4, $N5], [$N6, $N7]] and
	 [f['id'] for f in j['fragments']] == [$N1, $N2, $N3, $N4, $N5, $N6, $N7]" \
	thread --agent captain
ok "agent threads: in time order, split where the gap exceeds the window"

# ---- insights -----------------------------------------------------------------
check "insights" \
	"[p['period'] for p in j['periods']] == ['2026-01-05', '2026-01-06', '2026-01-07'] and
	 j['periods'][0]['terms'][0]['term'] == 'replication' and
	 {t['term'] for t in j['periods'][1]['terms'][:2]} == {'kubernetes', 'k8s'} and
	 {t['term'] for t in j['periods'][2]['terms'][:2]} == {'deadlock', 'scheduler'} and
	 j['periods'][0]['terms'][0]['df'] == 2 and j['periods'][2]['terms'][0]['df_all'] == 3 and
	 all(t['term'] not in ('the', 'and', 'its') for p in j['periods'] for t in p['terms'])" \
	insights --period day --agent captain --since 2026-01-01
check "insights --agent ops" \
	"len(j['periods']) == 1 and j['periods'][0]['terms'][0]['term'] in ('ops', 'notes', 'scheduler', 'deadlock')" \
	insights --agent ops --period all
ok "insights: the most significant term of each day"

# ---- devlog lines and a task result from an agent -----------------------------
cat >"$T/scribe.py" <<'EOF'
import json, os, sys
name = os.environ.get("DREAMOS_AGENT_NAME", "scribe")
out = os.environ["SCRIBE_OUT"]
def say(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()
say({"type": "hello", "proto": 1, "name": name, "capabilities": ["write"], "max_tasks": 1})
say({"type": "devlog", "text": "Woke up, reading the quarterly figures"})
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("type")
    if t == "task.assign":
        tid = m["task"]["id"]
        say({"type": "devlog", "task": tid, "text": "Collecting the quarterly sales figures"})
        say({"type": "devlog", "task": tid, "text": "Drafting the quarterly summary"})
        say({"type": "task.done", "task": tid, "result": {"report": "quarterly report ready"}})
    elif t == "message":
        say({"type": "ack", "id": m["id"]})
        if m.get("from") == "dreamscribe":
            with open(out + ".tmp", "w") as f:
                json.dump(m["body"], f)
            os.rename(out + ".tmp", out)
        elif isinstance(m.get("body"), dict) and "ask" in m["body"]:
            say({"type": "send", "to": "dreamscribe",
                 "body": {"recall": m["body"]["ask"], "k": 2}})
    elif t == "command" and m.get("name") == "stop":
        break
EOF
ctl agent spawn scribe --cap write --env "SCRIBE_OUT=$T/recall.json" -- "$PY" -u "$T/scribe.py" \
	>"$T/spawn.out" 2>&1 || fail "agent spawn: $(cat "$T/spawn.out")"
TASK=$(ctl task add "quarterly report" --cap write --json | json_get 'j["id"]')
task_done() { ctl task show "$TASK" --json 2>/dev/null | jtest 'j["state"] == "done"' 2>/dev/null; }
wait_for 15 "task $TASK done" task_done
three() { mem_is 'len(j["fragments"]) >= 3' thread --task "$TASK"; }
wait_for 10 "the task thread" three
N9=$(add "Captain approved the quarterly report" --task "$TASK")
check "task thread" \
	"j['by'] == 'task' and [(f['kind'], f['agent']) for f in j['fragments']] ==
	 [('devlog', 'scribe'), ('devlog', 'scribe'), ('result', 'scribe'), ('note', 'captain')] and
	 [f['text'] for f in j['fragments']][:2] ==
	 ['Collecting the quarterly sales figures', 'Drafting the quarterly summary'] and
	 'quarterly report ready' in j['fragments'][2]['text'] and
	 j['fragments'][3]['id'] == $N9 and all(f['task'] == $TASK for f in j['fragments'])" \
	thread --task "$TASK"
check "thread of the note" "j['by'] == 'task' and [f['id'] for f in j['fragments']][-1] == $N9" \
	thread "$N9"
check "scribe's story" \
	"[f['text'] for f in j['fragments']][0] == 'Woke up, reading the quarterly figures' and
	 len(j['threads']) == 1 and len(j['fragments']) == 4" \
	thread --agent scribe
ok "devlog lines and the task result ingested; the task thread in order, the captain's note last"

# ---- recall -------------------------------------------------------------------
check "recall" \
	"1 <= len(j['fragments']) <= 2 and all('kubernetes' in f['text'].lower() for f in j['fragments'])" \
	recall "how is the kubernetes cluster doing?" --k 2
ctl send scribe m --body '{"ask": "where is the quarterly report?"}' >/dev/null || fail "send"
wait_for 10 "the recall answer" test -f "$T/recall.json"
jtest "j['recall'] == 'where is the quarterly report?' and len(j['fragments']) == 2 and
       all('quarterly' in f['text'].lower() for f in j['fragments'])" <"$T/recall.json" ||
	fail "recall answer: $(cat "$T/recall.json")"
ok "recall: as a command, and as a message to the dreamscribe agent"

# ---- reload keeps the memory --------------------------------------------------
ctl ext reload dreamscribe >/dev/null || fail "ext reload"
check "after reload" "[r['id'] for r in j['results']] == [$N6, $N8, $N7]" search deadlock
ok "memory survives a reload"

ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
grep -q 'Sanitizer\|runtime error' "$T/headless.err" && fail "sanitizer report"
ok "clean shutdown"
