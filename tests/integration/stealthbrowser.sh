#!/bin/sh
# stealthbrowser.sh — the StealthBrowser extension against a local web site
# (tests/helpers/web_stub.py on 127.0.0.1) with the real Chromium, driven
# over --remote-debugging-pipe: the browser is not started at load; open +
# text; a form filled with `browse type` / `browse click` (trusted events)
# reaches the server; a screenshot is a PNG of the configured window size;
# navigator.webdriver is false and the user agent (navigator, client hints,
# HTTP header) has no "Headless"; a page that never finishes loading times
# out with a clear error and the browser still works; a task with
# capability web is done by the browser agent; a killed browser is
# restarted by the next command (restarts 1); unloading ends every process
# of the browser.  Then the host's child-process API itself, through the
# procx test extension: pipes both ways, exit status, end of file before
# the exit callback, signals, errors, and the sweep (SIGTERM, then SIGKILL).
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no $PY"
SO="${top_builddir:-.}/extensions/stealthbrowser/.libs/stealthbrowser.so"
PX="${top_builddir:-.}/tests/ext/.libs/procx.so"
[ -f "$SO" ] || { echo "skip: $SO not built"; exit 77; }
[ -f "$PX" ] || { echo "skip: $PX not built"; exit 77; }
CHROMIUM=""
for c in chromium chromium-browser google-chrome google-chrome-stable; do
	CHROMIUM=$(command -v "$c" 2>/dev/null) && break
done
[ -n "$CHROMIUM" ] || { echo "skip: no chromium installed"; exit 77; }

PROFILE="$RT/extensions/stealthbrowser/profile"
# Processes of this test's browser (their command lines name its profile;
# the "[e]" keeps a shell whose command line holds the pattern out).
PROFILE_RE="--user-data-dir=${PROFILE%e}[e]"
browser_pids() { pgrep -f -- "$PROFILE_RE" 2>/dev/null; }
MARK_RE="procx-$$-marke[r]"
# Everything this test started goes, by pid, whatever happened.
cleanup_browser() {
	for p in $(browser_pids) $(pgrep -f "$MARK_RE" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	cleanup
}
trap cleanup_browser EXIT

stub() { "$PY" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT$1').read().decode())"; }
now_ms() { "$PY" -c 'import time; print(int(time.time()*1000))'; }

# ---- the web site: exits when its stdin (a fifo held by this shell) closes
start_stub web_stub.py
PORT=$(head -n 1 "$T/stub.out")
URL="http://127.0.0.1:$PORT"

mkdir -p "$T/ext"
cp "$SO" "$T/ext/stealthbrowser.so" || fail "cp $SO"
cp "$PX" "$T/ext/procx.so" || fail "cp $PX"
W=1100 H=700
cat >"$T/dreamos.yaml" <<EOF
agents:
  heartbeat_timeout: 0
extensions:
  dir: $T/ext
  load: [stealthbrowser, procx]
  stealthbrowser:
    chromium: $CHROMIUM
    window_width: $W
    window_height: $H
    timeout_ms: 15000
    pause_ms_min: 5
    pause_ms_max: 25
    key_ms_min: 1
    key_ms_max: 4
    seed: 42
    kill_after_s: 2
EOF

start_headless --bridge-port 0 --config "$T/dreamos.yaml"
wait_for 10 "the extension" sh -c "'$DREAMOS' ctl --runtime '$RT' ext list | grep -q 'stealthbrowser  *1\.0'"
ctl browse status --json >"$T/st0.json" || fail "browse status"
jtest 'j["state"] == "down" and j["pid"] == 0 and j["launches"] == 0' <"$T/st0.json" ||
	fail "the browser runs before it is used: $(cat "$T/st0.json")"
[ -z "$(browser_pids)" ] || fail "a chromium process runs before the first command"
ctl agent list | grep -q '^browser' || ctl agent list | grep -q ' browser ' || fail "no browser agent: $(ctl agent list)"
ok "loaded; the browser agent exists; Chromium is not started at load"

# ---- open + text
T0=$(now_ms)
ctl browse open "$URL/hello" --json >"$T/open.json" 2>"$T/open.err" || fail "browse open: $(cat "$T/open.err")"
T1=$(now_ms)
jtest 'j["title"] == "Hello page" and j["url"].endswith("/hello")' <"$T/open.json" || fail "open: $(cat "$T/open.json")"
ctl browse text --json >"$T/text.json" || fail "browse text"
jtest '"The quick brown fox 4711 jumps." in j["text"]' <"$T/text.json" || fail "text: $(cat "$T/text.json")"
ctl browse status --json >"$T/st1.json" || fail "browse status"
jtest 'j["state"] == "ready" and j["pid"] > 0 and j["pages"] == 1 and j["restarts"] == 0' <"$T/st1.json" ||
	fail "status: $(cat "$T/st1.json")"
BPID=$(json_get 'j["pid"]' <"$T/st1.json")
kill -0 "$BPID" 2>/dev/null || fail "browser pid $BPID is not running"
ctl browse open file:///etc/passwd >"$T/file.out" 2>&1 && fail "a file:// URL was opened"
grep -q "is not a URL it may open" "$T/file.out" || fail "file URL: $(cat "$T/file.out")"
ok "browse open (first, with the launch: $((T1 - T0)) ms) and browse text"

# ---- low detection
ctl browse open "$URL/detect" --json >/dev/null || fail "open /detect"
wait_for 10 "the detect report" sh -c "'$PY' -c \"import urllib.request,json,sys; sys.exit(0 if json.load(urllib.request.urlopen('$URL/stub/reports')) else 1)\""
stub /stub/reports >"$T/reports.json"
"$PY" - "$T/reports.json" "$W" "$H" <<'EOF' || fail "detectable: $(cat "$T/reports.json")"
import json, sys
r = json.load(open(sys.argv[1]))[-1]
w, h = int(sys.argv[2]), int(sys.argv[3])
assert r["webdriver"] is False, r["webdriver"]
for ua in (r["userAgent"], r["header_user_agent"]):
    assert "Headless" not in ua and "Chrome/" in ua, ua
assert r["userAgent"] == r["header_user_agent"], (r["userAgent"], r["header_user_agent"])
assert r["brands"] is None or not any("Headless" in b for b in r["brands"]), r["brands"]
assert r["languages"][0] == "en-US" and r["language"] == "en-US", r["languages"]
assert r["header_accept_language"].startswith("en-US"), r["header_accept_language"]
assert r["platform"] == "Linux x86_64" and "Linux x86_64" in r["userAgent"], r["platform"]
assert (r["innerWidth"], r["innerHeight"]) == (w, h), (r["innerWidth"], r["innerHeight"])
assert (r["screenWidth"], r["screenHeight"]) == (w, h), (r["screenWidth"], r["screenHeight"])
EOF
ctl browse text --json | jtest '"\"webdriver\":false" in j["text"]' || fail "the page text does not say webdriver false"
ok "navigator.webdriver false; no HeadlessChrome (navigator, client hints, header); en-US; ${W}x${H}"

# ---- a form: typed and clicked with trusted events, received by the server
ctl browse open "$URL/form" >/dev/null || fail "open /form"
ctl browse type '#name' 'Ada Lovelace' --json >"$T/type.json" 2>&1 || fail "browse type: $(cat "$T/type.json")"
jtest 'j["chars"] == 12' <"$T/type.json" || fail "type: $(cat "$T/type.json")"
ctl browse type '#email' 'ada@example.org' >/dev/null || fail "browse type #email"
ctl browse click '#go' >/dev/null || fail "browse click #go"
wait_for 10 "the form submission" sh -c "'$PY' -c \"import urllib.request,json,sys; sys.exit(0 if json.load(urllib.request.urlopen('$URL/stub/submissions')) else 1)\""
stub /stub/submissions | jtest 'j[-1]["name"] == "Ada Lovelace" and j[-1]["email"] == "ada@example.org" and j[-1]["keys"] == "27" and j[-1]["clicks"] == "1"' ||
	fail "submission: $(stub /stub/submissions)"
wait_for 10 "the thanks page" sh -c "'$DREAMOS' ctl --runtime '$RT' browse text 2>/dev/null | grep -q 'Thanks, Ada Lovelace'"
ctl browse click '#nosuchthing' >"$T/click.out" 2>&1 && fail "a click on nothing succeeded"
grep -q "no element matches '#nosuchthing'" "$T/click.out" || fail "click error: $(cat "$T/click.out")"
ok "browse type + browse click fill and send a form (27 trusted keys, 1 trusted click); a missing element is a clear error"

# ---- eval
ctl browse eval '6 * 7' --json | jtest 'j["value"] == 42' || fail "eval 6*7"
ctl browse eval 'Promise.resolve({a: [1, "x"]})' --json | jtest 'j["value"] == {"a": [1, "x"]}' || fail "eval promise"
ctl browse eval 'nosuchvariable + 1' >"$T/eval.out" 2>&1 && fail "a failing eval succeeded"
grep -q "ReferenceError: nosuchvariable is not defined" "$T/eval.out" || fail "eval error: $(cat "$T/eval.out")"
ok "browse eval: values, awaited promises, exceptions as errors"

# ---- screenshot
ctl browse open "$URL/hello" >/dev/null || fail "open /hello"
ctl browse shot first --json >"$T/shot.json" 2>&1 || fail "browse shot: $(cat "$T/shot.json")"
SHOT=$(json_get 'j["file"]' <"$T/shot.json")
[ "$SHOT" = "$RT/extensions/stealthbrowser/shots/first.png" ] || fail "shot file: $SHOT"
"$PY" - "$SHOT" "$W" "$H" <<'EOF' || fail "not a ${W}x${H} PNG: $SHOT"
import struct, sys
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"\x89PNG\r\n\x1a\n", d[:8]
assert d[12:16] == b"IHDR", d[12:16]
w, h = struct.unpack(">II", d[16:24])
assert (w, h) == (int(sys.argv[2]), int(sys.argv[3])), (w, h)
assert d[-8:-4] == b"IEND", d[-12:]
EOF
SHOTSIZE=$(wc -c <"$SHOT")
[ "$(stat -c %a "$RT/extensions/stealthbrowser/profile")" = 700 ] || fail "the profile is not 0700"
ctl browse shot ../escape >/dev/null 2>&1 && fail "a screenshot name with a slash was taken"
ok "browse shot: a ${W}x${H} PNG ($SHOTSIZE bytes) in runtime/extensions/stealthbrowser/shots; profile 0700"

# ---- a page that never finishes loading
T0=$(now_ms)
ctl browse open "$URL/slow" --timeout-ms 1500 >"$T/slow.out" 2>&1 && fail "the never-loading page loaded"
T1=$(now_ms)
grep -q "open $URL/slow: timed out after 1500 ms" "$T/slow.out" || fail "slow: $(cat "$T/slow.out")"
[ $((T1 - T0)) -lt 6000 ] || fail "the timeout took $((T1 - T0)) ms"
ctl browse open "$URL/hello" >/dev/null 2>"$T/after.err" || fail "open after the timeout: $(cat "$T/after.err")"
ctl browse text | grep -q "quick brown fox" || fail "text after the timeout"
ok "a never-loading page times out ($((T1 - T0)) ms) with a clear error; the browser works afterwards"

# ---- a task with capability web, done by the browser agent
TASK=$(ctl task add "read hello" --cap web --payload "{\"url\": \"$URL/hello\", \"actions\": [{\"text\": true}, {\"eval\": \"document.title\"}, {\"shot\": \"task1\"}]}" --json | json_get 'j["id"]')
wait_for 20 "task $TASK done" sh -c "'$DREAMOS' ctl --runtime '$RT' task show $TASK --json | grep -q '\"state\": \"done\"'"
ctl task show "$TASK" --json >"$T/task.json"
jtest 'j["agent"] == "browser" and "quick brown fox 4711" in j["result"]["text"] and j["result"]["evals"] == ["Hello page"] and j["result"]["shots"][0].endswith("/shots/task1.png") and j["result"]["title"] == "Hello page"' <"$T/task.json" ||
	fail "task result: $(cat "$T/task.json")"
[ -f "$RT/extensions/stealthbrowser/shots/task1.png" ] || fail "the task's screenshot is missing"
BAD=$(ctl task add "bad" --cap web --payload '{"url": "'"$URL"'/hello", "actions": [{"dance": true}]}' --retries 0 --json | json_get 'j["id"]')
wait_for 10 "task $BAD failed" sh -c "'$DREAMOS' ctl --runtime '$RT' task show $BAD --json | grep -q 'bad action .dance.'"
ok "a task with capability web: url + actions -> task.done with text, evals, screenshot; a bad payload fails clearly"

# ---- the browser dies: the next command restarts it
kill -KILL "$BPID" || fail "kill $BPID"
wait_for 10 "the browser down" sh -c "'$DREAMOS' ctl --runtime '$RT' browse status --json | grep -q '\"state\": \"down\"'"
ctl browse open "$URL/hello" --json >"$T/reopen.json" 2>&1 || fail "open after the crash: $(cat "$T/reopen.json")"
ctl browse status --json >"$T/st2.json"
jtest 'j["state"] == "ready" and j["restarts"] == 1 and j["crashes"] == 1 and j["launches"] == 2 and j["pid"] != '"$BPID" <"$T/st2.json" ||
	fail "after the crash: $(cat "$T/st2.json")"
ctl logs --grep "the browser died" --limit 50 | grep -q "killed by signal 9" || fail "no log line for the crash"
ok "a killed browser (kill -9) is restarted by the next command (restarts 1)"

# ---- the child-process API (procx)
ID=$(ctl procx spawn --pipes 1 --env "PX_GREETING=hi-$$" sh -c 'read l; echo "out:$l:$PX_GREETING"; read m <&3; echo "three:$m" >&3; echo oops >&2; exit 3' --json | json_get 'j["id"]')
ctl procx write "$ID" 0 hello --nl >/dev/null || fail "procx write 0"
ctl procx write "$ID" 3 pipe-data --nl >/dev/null || fail "procx write 3"
ctl procx wait "$ID" --json >"$T/px1.json" || fail "procx wait"
jtest 'j["out"]["1"] == "out:hello:hi-'$$'\n" and j["out"]["3"] == "three:pipe-data\n" and j["out"]["2"] == "oops\n" and j["status"] == 3 and j["signum"] == 0 and j["exit_calls"] == 1 and j["late_data"] == 0 and j["eof_before_exit"] and sorted(j["eof"]) == [1, 2, 3]' <"$T/px1.json" ||
	fail "procx: $(cat "$T/px1.json")"
ctl procx write "$ID" 0 late >"$T/px.out" 2>&1 && fail "a write to an ended process succeeded"
grep -q "no process $ID" "$T/px.out" || fail "write after the end: $(cat "$T/px.out")"
ID=$(ctl procx spawn cat --json | json_get 'j["id"]')
ctl procx write "$ID" 0 some text --nl >/dev/null && ctl procx write "$ID" 0 --eof >/dev/null || fail "procx write/eof"
ctl procx wait "$ID" --json | jtest 'j["out"]["1"] == "some text\n" and j["status"] == 0' || fail "cat with end of file"
ID=$(ctl procx spawn sleep 30 --json | json_get 'j["id"]')
ctl procx write "$ID" 5 x >"$T/px.out" 2>&1 && fail "a write to fd 5 succeeded"
grep -q "no fd 5" "$T/px.out" || fail "fd 5: $(cat "$T/px.out")"
ctl procx kill "$ID" 15 >/dev/null || fail "procx kill"
ctl procx wait "$ID" --json | jtest 'j["status"] == -1 and j["signum"] == 15 and j["exit_calls"] == 1' || fail "killed by SIGTERM"
ctl procx spawn /nonexistent/prog >"$T/px.out" 2>&1 && fail "spawning nothing succeeded"
grep -q "cannot start '/nonexistent/prog'" "$T/px.out" || fail "spawn error: $(cat "$T/px.out")"
ctl procx spawn --pipes 9 true >"$T/px.out" 2>&1 && fail "9 extra pipes accepted"
grep -q "extra_pipes must be 0 to 4" "$T/px.out" || fail "pipes error: $(cat "$T/px.out")"
# The sweep: one ignores SIGTERM (SIGKILL after 1 s), one does not.
ctl procx spawn --kill-after 1 sh -c "trap '' TERM; sleep 60; : procx-$$-marker stubborn" >/dev/null || fail "spawn stubborn"
ctl procx spawn --kill-after 5 sh -c "sleep 60; : procx-$$-marker meek" >/dev/null || fail "spawn meek"
sleep 0.3
[ "$(pgrep -f "$MARK_RE" | wc -l)" -ge 2 ] || fail "the sleepers are not running"
T0=$(now_ms)
ctl ext unload procx >/dev/null || fail "ext unload procx"
wait_for 5 "the sleepers to go" sh -c "! pgrep -f '$MARK_RE' >/dev/null"
T1=$(now_ms)
[ $((T1 - T0)) -ge 900 ] || fail "the SIGTERM-ignoring child went after $((T1 - T0)) ms, before kill_after_s"
ctl logs --grep "unloaded procx" --limit 20 | grep -q "2 process" || fail "the sweep did not count 2 processes: $(ctl logs --grep 'unloaded procx' --limit 5)"
ok "proc API: pipes both ways, env, exit status and signal, EOF before the exit callback, errors; the sweep (SIGTERM, SIGKILL after kill_after_s: $((T1 - T0)) ms)"

# ---- unload: the browser goes
[ -n "$(browser_pids)" ] || fail "no browser process before the unload"
ctl ext unload stealthbrowser >/dev/null || fail "ext unload stealthbrowser"
wait_for 6 "every browser process to end" sh -c "! pgrep -f -- '$PROFILE_RE' >/dev/null"
ctl logs --grep "unloaded stealthbrowser" --limit 20 | grep -q "1 process" || fail "the sweep did not count the browser"
ok "unload closes Chromium (no process of this test's browser left)"

# ---- dreamos stops while the browser runs: it goes too
ctl ext load stealthbrowser >/dev/null || fail "ext load stealthbrowser"
ctl browse open "$URL/hello" >/dev/null || fail "open after the reload"
ctl browse status --json | jtest 'j["state"] == "ready" and j["launches"] == 1' || fail "status after the reload"
[ -n "$(browser_pids)" ] || fail "no browser after the reload"
ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
[ -z "$(browser_pids)" ] || fail "browser processes outlive dreamos: $(browser_pids)"
grep -q "Sanitizer\|runtime error\|handles left open" "$T/headless.err" && fail "sanitizer report or handles left: $(grep -m3 "Sanitizer\|runtime error\|handles left" "$T/headless.err")"
ok "dreamos stops with the browser running: the browser goes, clean shutdown"
