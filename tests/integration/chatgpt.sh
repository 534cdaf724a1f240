#!/bin/sh
# chatgpt.sh — the ChatGPT bridge extension against a local stand-in of the
# OpenAI API (tests/helpers/openai_stub.py on 127.0.0.1, the real wire
# format): `ask` streams; an LLM agent answers a message (with its
# conversation; an answer sent on with "to" goes with, and is kept in, the
# conversation with that agent) and completes a task; usage and cost show
# in `agent info`; `chatgpt spawn` again without --cap keeps the
# capabilities remembered; the budget pauses an agent (not killed) with a
# log line and an alert; the loop guard pauses two agents replying to each
# other; 429 and 500 are retried by the outbound manager, 500 for good and
# a cut-off stream are errors, 401 fails the agent with "check the API key";
# the API key never shows in a log file, the store or `status --json`.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no $PY"
SO="${top_builddir:-.}/extensions/chatgpt/.libs/chatgpt.so"
[ -f "$SO" ] || { echo "skip: $SO not built"; exit 77; }
DSO="${top_builddir:-.}/extensions/dreamscribe/.libs/dreamscribe.so"
[ -f "$DSO" ] || { echo "skip: $DSO not built"; exit 77; }

KEY="sk-test-DO-NOT-LEAK-$$-0123456789abcdefXYZ"

# agent_is NAME PYEXPR: PYEXPR holds over `chatgpt status NAME --json` as j.
agent_is() { ctl chatgpt status "$1" --json 2>/dev/null | jtest "$2"; }
info_is() { ctl agent info "$1" --json 2>/dev/null | jtest "$2"; }
logged() { ctl logs --grep "$1" --limit 500 2>/dev/null | grep -q .; }
stub_count() { "$PY" -c "import json,urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/stub/count?tag=$1'))['hits'])"; }

# The stand-in: exits when its stdin (a fifo held open by this shell) closes.
start_stub openai_stub.py --key "$KEY"
PORT=$(head -n 1 "$T/stub.out")

mkdir -p "$T/ext"
cp "$SO" "$T/ext/chatgpt.so" || fail "cp $SO"
cp "$DSO" "$T/ext/dreamscribe.so" || fail "cp $DSO"
cat >"$T/dreamos.yaml" <<EOF
bridge:
  enabled: true
  retry_attempts: 3
  retry_delay: 0.1
agents:
  heartbeat_timeout: 0
extensions:
  dir: $T/ext
  load: [dreamscribe, chatgpt]
  chatgpt:
    base_url: http://127.0.0.1:$PORT
    api_key_env: CHATGPT_TEST_KEY
    model: gpt-4o-mini
    timeout_s: 10
    history: 6
    loop_guard: {exchanges: 4, seconds: 30}
    prices:
      stub-model: {input: 1.0, output: 2.0}
EOF

CHATGPT_TEST_KEY=$KEY
export CHATGPT_TEST_KEY
start_headless --bridge-port 0 --config "$T/dreamos.yaml"
unset CHATGPT_TEST_KEY
wait_for 10 "the chatgpt extension" sh -c "'$DREAMOS' ctl --runtime '$RT' ext list | grep -q 'chatgpt  *1\.0'"
ok "chatgpt loaded at start"

# ---- ask: streams, then a summary line with usage and cost
ctl ask --model stub-model --system "be short" "hello there, stand-in" >"$T/ask.out" 2>"$T/ask.err" ||
	fail "ask failed: $(cat "$T/ask.err")"
grep -q "^echo: hello there, stand-in \[history 0\]" "$T/ask.out" || fail "ask answer: $(cat "$T/ask.out")"
grep -q "stub-model: [0-9]* tokens in, [0-9]* out, \$0\.0000" "$T/ask.out" || fail "ask summary: $(cat "$T/ask.out")"
"$PY" - "$PORT" <<'EOF' || fail "the request was not the real wire format"
import json, sys, urllib.request
r = json.load(urllib.request.urlopen("http://127.0.0.1:%s/stub/requests" % sys.argv[1]))[-1]
b = r["body"]
assert r["auth"].startswith("Bearer sk-test-DO-NOT-LEAK-"), r["auth"][:12]
assert b["stream"] is True and b["model"] == "stub-model", b
assert b["stream_options"] == {"include_usage": True}, b
assert b["messages"][0] == {"role": "system", "content": "be short"}, b
assert b["messages"][-1]["role"] == "user", b
EOF
ok "ask streams the answer (SSE, [DONE]) with --model and --system, then usage and cost"

# ---- errors of ask: 429 and 500 retried, 500 for good, cut off, 401
ctl ask "#fail429 please" >"$T/a429.out" 2>&1 || fail "ask after a 429: $(cat "$T/a429.out")"
grep -q "^echo: #fail429 please" "$T/a429.out" || fail "429: $(cat "$T/a429.out")"
[ "$(stub_count fail429)" = 2 ] || fail "429: $(stub_count fail429) requests, not 2"
ctl ask "#fail500 please" >"$T/a500.out" 2>&1 || fail "ask after two 500s: $(cat "$T/a500.out")"
[ "$(stub_count fail500)" = 3 ] || fail "500: $(stub_count fail500) requests, not 3"
ok "429 (Retry-After) and 500 are retried by the outbound manager"
ctl ask "#always500 please" >"$T/a500b.out" 2>&1 && fail "ask with a lasting 500 succeeded"
grep -q "HTTP 500.*server had an error.*4 attempts" "$T/a500b.out" || fail "lasting 500: $(cat "$T/a500b.out")"
ctl ask "#cut one two three four five six seven eight nine ten" >"$T/acut.out" 2>&1 &&
	fail "a cut-off answer succeeded"
grep -q "cut off" "$T/acut.out" || fail "cut: $(cat "$T/acut.out")"
grep -q "^echo: #cut" "$T/acut.out" || fail "cut: the part that came was not shown"
ctl ask "#fail401 please" >"$T/a401.out" 2>&1 && fail "ask with a 401 succeeded"
grep -q "401.*check the API key (env CHATGPT_TEST_KEY)" "$T/a401.out" || fail "401: $(cat "$T/a401.out")"
ok "a lasting 500, a cut-off stream and a 401 are clear errors"

# ---- an LLM agent (agent spawn --type chatgpt) answers messages and tasks
ctl agent spawn llm1 --type chatgpt --cap summarize >/dev/null || fail "agent spawn --type chatgpt"
wait_for 10 "llm1 ready" sh -c "'$DREAMOS' ctl --runtime '$RT' agent list | grep -q 'llm1.*ready'"
ctl send llm1 "first question" >/dev/null || fail "send"
wait_for 10 "the answer" agent_is llm1 'j["requests"] == 1'
ctl send llm1 "second question" >/dev/null || fail "send"
wait_for 10 "the second answer" agent_is llm1 'j["requests"] == 2'
ctl history captain --json --limit 10 >"$T/hist.json" || fail "history"
jtest '[m for m in j if m["from"] == "llm1" and isinstance(m["body"], dict) and m["body"].get("text") == "echo: first question [history 0]"]' <"$T/hist.json" ||
	fail "no reply to the captain: $(cat "$T/hist.json")"
jtest '[m for m in j if m["from"] == "llm1" and m["body"].get("text") == "echo: second question [history 2]"]' <"$T/hist.json" ||
	fail "the conversation was not kept: $(cat "$T/hist.json")"
ok "an LLM agent answers messages to the sender, keeping the conversation"

TASK=$(ctl task add "summarize this" --cap summarize --payload '{"prompt": "summarize: a b c"}' --json | json_get 'j["id"]')
wait_for 10 "task $TASK done" sh -c "'$DREAMOS' ctl --runtime '$RT' task show $TASK --json | grep -q '\"state\": \"done\"'"
ctl task show "$TASK" --json | jtest 'j["result"]["answer"] == "echo: summarize: a b c [history 0]"' ||
	fail "task result: $(ctl task show "$TASK" --json)"
ok "an LLM agent completes a task (payload -> prompt -> task.done with the answer)"

info_is llm1 'j["tokens_in"] > 0 and j["tokens_out"] > 0 and j["cost_usd"] > 0' ||
	fail "usage not in agent info: $(ctl agent info llm1 --json)"

# ---- memories: an LLM agent's prompt carries what Dreamscribe recalls
ctl memory add "the launch code word is heliotrope" --tags ops >/dev/null || fail "memory add"
ctl send llm1 "#recall what is the launch code word" >/dev/null || fail "send"
wait_for 10 "the recall answer" sh -c "'$DREAMOS' ctl --runtime '$RT' history captain --json --limit 5 | grep -q 'system: .*heliotrope'"
ok "an LLM agent's prompt carries the fragments Dreamscribe recalls for it"

# ---- agent spawn --type chatgpt takes the type's options
ctl agent spawn llm2 --type chatgpt --model stub-model --system "be brief" --budget-usd 0.25 >/dev/null ||
	fail "agent spawn with --model --system --budget-usd"
wait_for 10 "llm2 ready" agent_is llm2 'j["model"] == "stub-model" and j["system"] == "be brief" and j["budget_usd"] == 0.25'
info_is llm2 'j["options"] == {"model": "stub-model", "system": "be brief", "budget-usd": "0.25"}' ||
	fail "options not in agent info: $(ctl agent info llm2 --json)"
ctl agent spawn bad1 --type chatgpt --option color=red >"$T/opt.out" 2>&1 && fail "an unknown option was taken"
grep -q "agent type chatgpt takes no option 'color'" "$T/opt.out" || fail "unknown option: $(cat "$T/opt.out")"
ctl agent spawn bad3 --type chatgpt --option color >"$T/opt.out" 2>&1 && fail "--option without = was taken"
grep -q "option expects NAME=VALUE, got 'color'" "$T/opt.out" || fail "--option color: $(cat "$T/opt.out")"
ctl agent spawn bad4 --type chatgpt --budget-usd lots >/dev/null || fail "agent spawn --budget-usd lots"
wait_for 10 "bad4's refusal" logged "bad4: --budget-usd expects a number >= 0, got 'lots'"
ctl agent stop bad4 >/dev/null 2>&1
ctl agent spawn bad2 --model x -- /bin/true >"$T/opt.out" 2>&1 && fail "--model for a process was taken"
grep -q "\-\-model is an option of extension agent types" "$T/opt.out" || fail "process option: $(cat "$T/opt.out")"
ok "agent spawn --type chatgpt --model --system --budget-usd reach the agent; wrong options are refused"
agent_is llm1 'j["tokens_in"] > 0 and j["spent_usd"] > 0' || fail "usage not in chatgpt status"
ok "usage (tokens, cost) shows in agent info"

# ---- chatgpt spawn again without --cap keeps the capabilities remembered
ctl chatgpt spawn keeper --cap keepcap >/dev/null || fail "chatgpt spawn keeper --cap keepcap"
wait_for 10 "keeper with its capability" info_is keeper '"keepcap" in j["capabilities"]'
ctl chatgpt spawn keeper --model stub-model >"$T/respawn.out" 2>&1 ||
	fail "chatgpt spawn of a running agent: $(cat "$T/respawn.out")"
agent_is keeper 'j["model"] == "stub-model"' || fail "the new model was not taken"
ctl ext reload chatgpt >"$T/reload.out" 2>&1 || fail "ext reload chatgpt: $(cat "$T/reload.out")"
wait_for 10 "keeper back" agent_is keeper 'j["model"] == "stub-model"'
info_is keeper '"keepcap" in j["capabilities"]' ||
	fail "keeper lost its capability at the load after a spawn without --cap: $(ctl agent info keeper --json)"
ok "chatgpt spawn again without --cap keeps the capabilities it remembered"

# ---- {"to": OTHER}: the answer goes with the conversation with OTHER
ctl chatgpt spawn intro >/dev/null || fail "chatgpt spawn intro"
ctl agent spawn sink --type chatgpt >/dev/null || fail "agent spawn sink"
wait_for 10 "intro and sink" agent_is sink 'j["state"] == "running"'
ctl agent pause sink >/dev/null || fail "agent pause sink" # it does not answer
ctl send intro "hello intro" >/dev/null || fail "send"
wait_for 10 "intro's answer" agent_is intro 'j["requests"] == 1'
ctl send intro x --body '{"text": "meet sink", "to": "sink"}' >/dev/null || fail "send"
wait_for 10 "intro's answer to sink" agent_is intro 'j["requests"] == 2'
ctl history sink --json --limit 10 >"$T/hsink.json" || fail "history sink"
jtest '[m for m in j if m["from"] == "intro" and m["body"].get("text") == "echo: meet sink [history 0]"]' <"$T/hsink.json" ||
	fail "the answer to sink was not made with the conversation with sink: $(cat "$T/hsink.json")"
agent_is intro 'j["conversations"] == {"captain": 2, "sink": 2}' ||
	fail "intro's conversations: $(ctl chatgpt status intro --json)"
ok "an answer sent to another agent ({\"to\": OTHER}) is made with, and kept in, the conversation with it"

# ---- budget: paused, not killed, with a log line and an alert
ctl chatgpt spawn rich --budget-usd 0.5 >/dev/null || fail "chatgpt spawn --budget-usd"
wait_for 10 "rich ready" sh -c "'$DREAMOS' ctl --runtime '$RT' agent list | grep -q 'rich.*ready'"
ctl send rich "#expensive question" >/dev/null || fail "send"
wait_for 10 "the budget pause" agent_is rich 'j["state"] == "paused: budget reached"'
logged "budget reached: agent rich spent" || fail "no budget log line"
ctl history captain --json --limit 20 | jtest '[m for m in j if m["from"] == "chatgpt" and m["body"].get("alert") == "budget" and m["priority"] == "urgent"]' ||
	fail "no budget alert"
info_is rich 'j["state"] == "paused" and "budget reached" in j["state_reason"]' ||
	fail "rich is not paused in agent info: $(ctl agent info rich --json)"
ctl agent list | grep -q 'rich.*paused.*budget reached' || fail "agent list: $(ctl agent list)"
ctl send rich "are you there" >/dev/null || fail "send"
sleep 0.5
agent_is rich 'j["requests"] == 1' || fail "a paused agent asked the model"
ctl agent resume rich >/dev/null || fail "agent resume"
wait_for 5 "paused again (still over budget)" info_is rich 'j["state"] == "paused" and "budget reached" in j["state_reason"]'
ctl chatgpt resume rich >/dev/null 2>&1 && fail "resumed although over budget"
ctl chatgpt resume rich --budget-usd 5 >/dev/null || fail "resume with a bigger budget"
wait_for 10 "the held message answered" agent_is rich 'j["held"] == 0 and j["requests"] == 2'
info_is rich 'j["state"] == "ready"' || fail "not ready after resume: $(ctl agent info rich --json)"
ok "the budget pauses the agent (log line, alert), a bigger budget resumes it"

# ---- loop guard
ctl chatgpt spawn ping >/dev/null && ctl chatgpt spawn pong >/dev/null || fail "chatgpt spawn"
wait_for 10 "ping and pong" sh -c "'$DREAMOS' ctl --runtime '$RT' agent list | grep -c 'p[io]ng.*ready' | grep -q 2"
ctl send ping x --body '{"text": "#chat start", "to": "pong"}' >/dev/null || fail "send"
wait_for 10 "the loop guard" agent_is ping 'j["state"] == "paused: reply loop"'
wait_for 10 "the loop guard" agent_is pong 'j["state"] == "paused: reply loop"'
info_is ping 'j["state"] == "paused" and "loop guard" in j["state_reason"]' ||
	fail "ping is not paused in agent info: $(ctl agent info ping --json)"
logged "loop guard: agents" || fail "no loop guard log line"
N=$(stub_count chat)
sleep 1
[ "$(stub_count chat)" = "$N" ] || fail "the loop goes on"
[ "$N" -le 6 ] || fail "the loop guard let $N exchanges through"
ok "the loop guard pauses two agents replying to each other ($N exchanges)"

# ---- 401: the agent goes failed with "check the API key"
ctl send llm1 "#fail401 now" >/dev/null || fail "send"
wait_for 10 "llm1 failed" info_is llm1 'j["state"] == "failed" and "check the API key" in j["state_reason"]'
sleep 0.5
info_is llm1 'j["state"] == "failed"' || fail "llm1 was restarted: $(ctl agent info llm1 --json)"
logged "llm1 failed: HTTP 401 Unauthorized.*check the API key" || fail "no 401 log line"
ok "a 401 fails the agent with 'check the API key'"

# ---- the key never shows
ctl status --json >"$T/status.json" || fail "status --json"
ctl chatgpt status --json >"$T/cstatus.json" || fail "chatgpt status --json"
ctl logs --limit 5000 >"$T/logs.txt" 2>&1
ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
# The stand-in echoed the key in its 401 body: it must not have got through.
LEAK=$(grep -rl -- "$KEY" "$RT" "$T"/*.json "$T"/*.txt "$T"/*.out "$T/headless.err" "$T"/a*.out 2>/dev/null)
[ -z "$LEAK" ] || fail "the API key leaked into: $LEAK"
grep -q "Sanitizer\|runtime error" "$T/headless.err" && fail "sanitizer report"
ok "the API key is in no log file, store file, status --json or output; clean shutdown"

# ---- api_key_file: a symbolic link, or a file group or others can read, is refused
RT=$T/rt-keyfile
sed -e "s|api_key_env: CHATGPT_TEST_KEY|api_key_file: $T/kf|" -e 's|load: \[dreamscribe, chatgpt\]|load: []|' \
	"$T/dreamos.yaml" >"$T/keyfile.yaml"
grep -q "api_key_file: $T/kf" "$T/keyfile.yaml" || fail "keyfile.yaml: $(cat "$T/keyfile.yaml")"
printf '%s\n' "$KEY" >"$T/kf.real"
chmod 600 "$T/kf.real"
ln -s "$T/kf.real" "$T/kf"
start_headless --bridge-port 0 --config "$T/keyfile.yaml"
ctl ext load chatgpt >"$T/kf1.out" 2>&1 && fail "a key file that is a symbolic link was accepted"
grep -q "api_key_file $T/kf: Too many levels of symbolic links" "$T/kf1.out" || fail "symlink: $(cat "$T/kf1.out")"
rm "$T/kf"
cp "$T/kf.real" "$T/kf"
chmod 644 "$T/kf"
ctl ext load chatgpt >"$T/kf2.out" 2>&1 && fail "a key file with mode 0644 was accepted"
grep -q "has mode 0644: group and others must have no access (chmod 600 $T/kf)" "$T/kf2.out" ||
	fail "mode 0644: $(cat "$T/kf2.out")"
chmod 400 "$T/kf"
ctl ext load chatgpt >"$T/kf3.out" 2>&1 || fail "a key file with mode 0400 was refused: $(cat "$T/kf3.out")"
ctl chatgpt status --json | jtest 'j["api_key_present"]' || fail "no key from the file: $(ctl chatgpt status --json)"
grep -rl -- "$KEY" "$RT" "$T"/kf?.out "$T/headless.err" 2>/dev/null && fail "the key from the file leaked"
ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
ok "api_key_file: a symbolic link and mode 0644 are refused with the reason; 0400 is read, the key is not shown"
