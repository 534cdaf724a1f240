#!/bin/sh
# codex.sh — the Codex bridge extension against the local stand-in of the
# OpenAI API (tests/helpers/openai_stub.py, tag #codex-demo): in a temporary
# git repository whose check fails, `codex run` gets a wrong diff first (the
# check still fails), feeds the check output back, and passes on the second
# attempt, on the branch codex/ID in a worktree, the user's checkout
# untouched; the same through a task with capability code done by a codex
# agent; --review adds the JSON verdict; a non-repository is refused.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no $PY"
command -v git >/dev/null 2>&1 || { echo "skip: no git"; exit 77; }
SO="${top_builddir:-.}/extensions/codex/.libs/codex.so"
[ -f "$SO" ] || { echo "skip: $SO not built"; exit 77; }

KEY="sk-test-codex-$$-0123456789abcdef"
stub_count() { "$PY" -c "import json,urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/stub/count?tag=$1'))['hits'])"; }

start_stub openai_stub.py --key "$KEY"
PORT=$(head -n 1 "$T/stub.out")

# A repository with a bug and a check that fails.
REPO="$T/repo"
mkdir -p "$REPO"
(
	cd "$REPO" && git init -q && git config user.name t && git config user.email t@t &&
		printf 'def add(a, b):\n    return a - b\n' >calc.py &&
		printf 'import sys\nfrom calc import add\nif add(2, 3) != 5:\n    print("FAIL" + "ED: add(2, 3) =", add(2, 3))\n    sys.exit(1)\nprint("OK")\n' >check.py &&
		git add . && git commit -qm init
) || fail "git repo"
(cd "$REPO" && python3 check.py >/dev/null) && fail "the check passes before the fix"
BASE=$(git -C "$REPO" rev-parse HEAD)
BRANCH0=$(git -C "$REPO" symbolic-ref --short HEAD)

mkdir -p "$T/ext"
cp "$SO" "$T/ext/codex.so" || fail "cp $SO"
cat >"$T/dreamos.yaml" <<EOF2
bridge:
  enabled: true
  retry_attempts: 1
  retry_delay: 0.1
agents:
  heartbeat_timeout: 0
extensions:
  dir: $T/ext
  load: []          # codex is loaded by the test
  codex:
    base_url: http://127.0.0.1:$PORT
    api_key_env: CODEX_TEST_KEY
    model: stub-coder
    timeout_s: 10
    check_timeout_s: 5
EOF2
CODEX_TEST_KEY=$KEY
export CODEX_TEST_KEY
start_headless --bridge-port 0 --config "$T/dreamos.yaml"
unset CODEX_TEST_KEY
ctl ext load "$T/ext/codex.so" >"$T/load.out" 2>&1 || fail "ext load: $(cat "$T/load.out")"
ctl ext list | grep -q 'codex  *1\.0' || fail "codex not listed: $(ctl ext list)"
ok "codex loaded with ext load"

# ---- codex run: wrong diff first, the check output goes back, right on attempt 2
ctl codex run --workspace "$REPO" --check 'python3 check.py' 'fix the add function #codex-demo' --json \
	>"$T/run.json" 2>"$T/run.err" || fail "codex run: $(cat "$T/run.err") $(cat "$T/run.json")"
jtest 'j["status"] == "pass" and j["passed"] and j["attempts"] == 2' <"$T/run.json" ||
	fail "not a pass on attempt 2: $(cat "$T/run.json")"
jtest 'j["history"][0]["check_exit"] == 1 and "FAILED: add(2, 3) = 6" in j["history"][0]["output"] and "a * b" in j["history"][0]["diff"]' <"$T/run.json" ||
	fail "attempt 1: $(cat "$T/run.json")"
jtest '"+    return a + b" in j["diff"] and j["check_exit"] == 0 and "OK" in j["check_output"]' <"$T/run.json" ||
	fail "diff/check: $(cat "$T/run.json")"
[ "$(stub_count codex)" = 2 ] || fail "$(stub_count codex) model calls, not 2"
"$PY" - "$PORT" <<'EOF2' || fail "the second prompt did not carry the check output"
import json, sys, urllib.request
r = json.load(urllib.request.urlopen("http://127.0.0.1:%s/stub/requests" % sys.argv[1]))
p1, p2 = (x["body"]["messages"][-1]["content"] for x in r[-2:])
assert "FAILED: add(2, 3) = 6" not in p1 and "FAILED: add(2, 3) = 6" in p2
assert "=== calc.py ===" in p1 and "fix the add function" in p1
assert r[-1]["body"]["model"] == "stub-coder" and r[-1]["auth"].startswith("Bearer sk-test-codex-")
EOF2
ok "codex run fixes the failing check on the second attempt (check output fed back)"

BR=$(json_get 'j["branch"]' <"$T/run.json")
WD=$(json_get 'j["workdir"]' <"$T/run.json")
case $BR in codex/*) ;; *) fail "branch $BR" ;; esac
case $WD in "$RT"/extensions/codex/work/*) ;; *) fail "workdir $WD" ;; esac
git -C "$REPO" show "$BR:calc.py" | grep -q 'return a + b' || fail "the fix is not on $BR"
[ "$(git -C "$REPO" rev-parse "$BR^")" = "$BASE" ] || fail "$BR is not one commit on top of the base"
[ "$(git -C "$REPO" rev-parse HEAD)" = "$BASE" ] || fail "the user's HEAD moved"
[ "$(git -C "$REPO" symbolic-ref --short HEAD)" = "$BRANCH0" ] || fail "the user's branch changed"
grep -q 'return a - b' "$REPO/calc.py" || fail "the user's calc.py was touched"
[ -z "$(git -C "$REPO" status --porcelain)" ] || fail "the user's checkout is dirty: $(git -C "$REPO" status --porcelain)"
(cd "$WD" && python3 check.py | grep -q OK) || fail "the check fails in the worktree"
ok "the change is committed on $BR (a worktree); the user's checkout is untouched"

# ---- --review: the JSON verdict is part of the result
ctl codex run --workspace "$REPO" --check 'python3 check.py' --review 'fix the add function #codex-demo' --json \
	>"$T/review.json" 2>"$T/review.err" || fail "codex run --review: $(cat "$T/review.err")"
jtest 'j["passed"] and j["attempts"] == 2 and j["review"]["valid"] is True and "adds" in j["review"]["feedback"] and j["review"]["suggestions"] == ["add a test for negative numbers"]' <"$T/review.json" ||
	fail "review: $(cat "$T/review.json")"
jtest 'j["branch"] != "'"$BR"'"' <"$T/review.json" || fail "the same branch twice"
ok "--review: the verdict {valid, feedback, suggestions} is in the result"

# ---- a task with capability code, done by a codex agent
ctl agent spawn cx --type codex >/dev/null || fail "agent spawn --type codex"
cx_ready() { ctl agent list | grep -q 'cx.*ready'; }
wait_for 30 "cx to be ready" cx_ready
PAYLOAD=$("$PY" -c 'import json,sys; print(json.dumps({"workspace": sys.argv[1], "check": "python3 check.py", "instruction": "fix the add function #codex-demo"}))' "$REPO")
TASK=$(ctl task add "fix add" --cap code --payload "$PAYLOAD" --json | json_get 'j["id"]')
task_ended() { ctl task show "$TASK" --json | jtest 'j["state"] in ("done", "failed", "dead")'; }
wait_for 120 "task $TASK to end" task_ended
ctl task show "$TASK" --json >"$T/task.json"
jtest 'j["state"] == "done" and j["result"]["passed"] and j["result"]["attempts"] == 2 and "a + b" in j["result"]["diff"] and j["result"]["branch"].startswith("codex/")' <"$T/task.json" ||
	fail "task: $(cat "$T/task.json")"
jtest 'j.get("agent") in (None, "cx") or j.get("assignee") == "cx"' <"$T/task.json" || fail "not done by cx: $(cat "$T/task.json")"
TB=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["result"]["branch"])' <"$T/task.json")
git -C "$REPO" show "$TB:calc.py" | grep -q 'return a + b' || fail "the task's fix is not on $TB"
grep -q 'return a - b' "$REPO/calc.py" || fail "the user's calc.py was touched by the task"
ok "a task with capability code is done by a codex agent (pass on attempt 2, $TB)"

# ---- errors: not a repository; a check that never passes
mkdir -p "$T/plain"
ctl codex run --workspace "$T/plain" 'do it #codex-demo' >"$T/plain.out" 2>&1 && fail "a non-repository was accepted"
grep -q "not a git repository" "$T/plain.out" || fail "non-repository: $(cat "$T/plain.out")"
ctl codex run --workspace "$REPO" --check 'false' --attempts 2 'fix the add function #codex-demo' --json \
	>"$T/never.json" 2>"$T/never.err" || fail "codex run (never passes): $(cat "$T/never.err")"
jtest 'j["status"] == "fail" and not j["passed"] and j["attempts"] == 2 and "still fails" in j["error"]' <"$T/never.json" ||
	fail "never passes: $(cat "$T/never.json")"
ok "a non-repository is refused; a check that never passes ends in fail after N attempts"

# ---- a check that does not end is killed at check_timeout_s (with its children)
ctl codex run --workspace "$REPO" --check 'sleep 987 & sleep 987' --attempts 1 'fix the add function #codex-demo' \
	--json >"$T/hang.json" 2>"$T/hang.err" || fail "codex run (hanging check): $(cat "$T/hang.err")"
jtest 'j["status"] == "fail" and "[killed: no end after 5 s]" in j["check_output"]' <"$T/hang.json" ||
	fail "hanging check: $(cat "$T/hang.json")"
i=0
while pgrep -f 'sleep 987' >/dev/null; do
	i=$((i + 1))
	test $i -lt 20 || fail "the hanging check's processes are still running"
	sleep 0.1
done
ok "a check that does not end is killed after check_timeout_s, its children too"

# ---- codex clean: worktrees go, branches stay unless --branches
ID1=$(json_get 'j["id"]' <"$T/run.json")
NEVER=$(json_get 'j["id"]' <"$T/never.json")
NWD=$(json_get 'j["workdir"]' <"$T/never.json")
NBR=$(json_get 'j["branch"]' <"$T/never.json")
[ -d "$WD" ] && [ -d "$NWD" ] || fail "the worktrees are not there before codex clean"
ctl codex clean "$ID1" >"$T/clean.out" 2>&1 || fail "codex clean: $(cat "$T/clean.out")"
grep -q "removed $WD" "$T/clean.out" || fail "clean: $(cat "$T/clean.out")"
[ ! -d "$WD" ] || fail "$WD is still there"
git -C "$REPO" show "$BR:calc.py" | grep -q 'return a + b' || fail "the branch $BR lost its commit"
git -C "$REPO" worktree list | grep -q "$WD" && fail "git still lists the worktree $WD"
ctl codex clean "$NEVER" --branches >"$T/clean2.out" 2>&1 || fail "codex clean --branches: $(cat "$T/clean2.out")"
[ ! -d "$NWD" ] || fail "$NWD is still there"
git -C "$REPO" rev-parse -q --verify "refs/heads/$NBR" >/dev/null && fail "--branches left $NBR"
ctl codex clean 999 >"$T/clean3.out" 2>&1 && fail "an unknown job was cleaned"
grep -q "no job 999" "$T/clean3.out" || fail "unknown job: $(cat "$T/clean3.out")"
ctl codex clean x1 >"$T/clean3.out" 2>&1 && fail "a bad id was taken"
grep -q "'x1' is not a job id" "$T/clean3.out" || fail "bad id: $(cat "$T/clean3.out")"
[ -z "$(git -C "$REPO" status --porcelain)" ] || fail "the user's checkout is dirty after clean"
ok "codex clean removes finished jobs' worktrees (branches keep their commits); --branches deletes them; bad ids refused"

ctl logs --limit 5000 >"$T/logs.txt" 2>&1
ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
LEAK=$(grep -rl -- "$KEY" "$RT" "$T"/*.json "$T"/*.txt "$T/headless.err" 2>/dev/null)
[ -z "$LEAK" ] || fail "the API key leaked into: $LEAK"
grep -q "Sanitizer\|runtime error" "$T/headless.err" && fail "sanitizer report"
ok "no key in logs or outputs; clean shutdown"

# ---- bad settings: ext load refuses them, saying which --------------------
bad_conf() { # SETTINGS EXPECTED: ext load fails with EXPECTED
	RT="$T/rt-bad"
	rm -rf "$RT"
	printf 'bridge: {enabled: false}\nextensions:\n  dir: %s\n  load: []\n  codex: %s\n' \
		"$T/ext" "$1" >"$T/bad.yaml"
	start_headless --config "$T/bad.yaml"
	ctl ext load "$T/ext/codex.so" >"$T/bad.out" 2>&1 && fail "codex loaded with codex: $1"
	grep -qF "$2" "$T/bad.out" || fail "codex: $1: $(cat "$T/bad.out")"
	ctl quit >/dev/null 2>&1
	wait_exit "$PID" 10
}
bad_conf '{base_url: "ftp://127.0.0.1/v1"}' "extensions.codex.base_url must start with http:// or https://"
bad_conf '[1, 2]' "extensions.codex must be a mapping"
ok "bad settings refused at ext load: a base_url not http(s), settings that are not a mapping"
