#!/bin/sh
# discord.sh — the Discord log mirror extension against a local stand-in of
# Discord's webhooks (tests/helpers/discord_stub.py on 127.0.0.1): records
# at or above min_level are batched into few messages (each at most 2,000
# characters, valid JSON) in order; a 429 is waited out (retry_after) and
# the same batch sent again; a 500 is retried; a route sends an agent's
# records to its own webhook; `discord test` answers once delivered; while
# the webhook is down the queue stays bounded, `discord status` counts the
# records dropped, the queue survives a hot reload, and once the webhook is
# back the queued records and a "N records dropped" line arrive; the
# outbound manager's failure lines are not mirrored; the webhook URLs are
# in no log file, `ctl logs`, `status --json` or `discord status`; without
# a webhook the extension loads and stays idle.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no $PY"
SO="${top_builddir:-.}/extensions/discord/.libs/discord.so"
[ -f "$SO" ] || { echo "skip: $SO not built"; exit 77; }

# Discord's tokens are 68 characters, like the first one; the second one is
# short (the outbound manager hides only long path segments by itself: the
# host must hide it because the extension gave it to secret_add).
TOKEN1="SECRETTOKEN1-$$-DO-NOT-LEAK-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
TOKEN2="SECRETTOKEN2-$$-x"

# status_is PYEXPR: PYEXPR holds over `discord status --json` as j; w1 and
# w2 are the two webhooks.
status_is() {
	ctl discord status --json 2>/dev/null | jtest "(lambda w1, w2: $1)(j['webhooks'][0], j['webhooks'][1])"
}
stub() { "$PY" -c "import urllib.request
print(urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$CPORT/stub/$1', data=b'', method='POST')).read().decode())" >/dev/null; }
messages() { "$PY" -c "import urllib.request
print(urllib.request.urlopen('http://127.0.0.1:$CPORT/stub/messages').read().decode())"; }
# stub_is PYEXPR: PYEXPR holds over the requests the stand-in saw as m
# (ok: the delivered ones; lines(hook): their lines, in order).
stub_is() {
	messages | "$PY" -c "import json,sys
m=json.load(sys.stdin)
ok=[r for r in m if r['status'] == 204]
def lines(hook): return [l for r in ok if r['hook'] == hook for l in r['content'].split('\n')]
def tagged(hook, tag): return [l.split(' ' + tag + ' ')[1][:4] for l in lines(hook) if ' ' + tag + ' ' in l]
sys.exit(0 if ($1) else 1)"
}
say() { ctl send "$1" x --body "$2" >/dev/null || fail "send to $1"; }

# ---- the stand-in: exits when its stdin (a fifo held open here) closes
start_stub discord_stub.py
read -r HPORT CPORT <"$T/stub.out"
URL1="http://127.0.0.1:$HPORT/api/webhooks/1234567890/$TOKEN1"
URL2="http://127.0.0.1:$HPORT/api/webhooks/4567/$TOKEN2"

# ---- an agent that logs what it is told to: {"n", "level", "prefix", "pad"}
cat >"$T/logger.py" <<'EOF'
import json, os, sys
def send(o):
    sys.stdout.write(json.dumps(o) + "\n")
    sys.stdout.flush()
send({"type": "hello", "proto": 1, "name": os.environ.get("DREAMOS_AGENT_NAME", "logger"), "version": "1"})
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("type") == "message":
        b = m.get("body") or {}
        pad = " " + "x" * int(b.get("pad", 0)) if b.get("pad") else ""
        for i in range(int(b.get("n", 1))):
            send({"type": "log", "level": b.get("level", "warn"), "msg": "%s %04d%s" % (b.get("prefix", "rec"), i, pad)})
        send({"type": "ack", "id": m["id"]})
    elif m.get("type") == "command" and m.get("name") == "stop":
        sys.exit(0)
EOF

mkdir -p "$T/ext"
cp "$SO" "$T/ext/discord.so" || fail "cp $SO"
cat >"$T/dreamos.yaml" <<EOF
bridge:
  enabled: false
agents:
  heartbeat_timeout: 0
  list:
    - name: logger
      command: $PY
      args: [-u, $T/logger.py]
    - name: router
      command: $PY
      args: [-u, $T/logger.py]
extensions:
  dir: $T/ext
  load: [discord]
  discord:
    webhook_url_env: DISCORD_TEST_WEBHOOK
    min_level: warn
    queue_max: 200
    batch_ms: 300
    retry_initial_s: 0.2
    retry_max_s: 0.5
    timeout_s: 5
    test_timeout_s: 10
    routes:
      router:
        webhook_url: $URL2
        min_level: info
EOF

DISCORD_TEST_WEBHOOK=$URL1
export DISCORD_TEST_WEBHOOK
start_headless --config "$T/dreamos.yaml"
unset DISCORD_TEST_WEBHOOK
wait_for 10 "the discord extension" sh -c "'$DREAMOS' ctl --runtime '$RT' ext list | grep -q 'discord  *1\.0'"
wait_for 10 "the agents" sh -c "'$DREAMOS' ctl --runtime '$RT' agent list | grep -c '\(logger\|router\).*ready' | grep -q 2"
status_is 'j["configured"] and w1["webhook"] == "#1" and w2["webhook"] == "#2" and w1["queued"] == 0' ||
	fail "discord status: $(ctl discord status --json)"
ok "discord loaded with a webhook from the environment and a route"

# ---- batching and order: 150 records, few messages, each <= 2,000 characters
say logger '{"n": 150, "level": "warn", "prefix": "batch", "pad": 40}'
say logger '{"n": 5, "level": "info", "prefix": "quiet"}'
say logger '{"n": 3, "level": "error", "prefix": "severe"}'
wait_for 15 "150 records at the webhook" stub_is 'len(tagged("1234567890", "batch")) == 150 and len(tagged("1234567890", "severe")) == 3'
stub_is 'tagged("1234567890", "batch") == ["%04d" % i for i in range(150)]' ||
	fail "records out of order or repeated: $(messages)"
stub_is 'all(r["valid"] and len(r["content"]) <= 2000 for r in m)' || fail "an invalid request: $(messages)"
stub_is 'all(r["content_type"].startswith("application/json") for r in m)' || fail "Content-Type"
N=$(messages | "$PY" -c "import json,sys
print(len([r for r in json.load(sys.stdin) if ' batch ' in r['content']]))")
[ "$N" -le 10 ] || fail "150 records took $N messages"
stub_is 'any(" **WARN** logger: batch 0000 " in l for l in lines("1234567890"))' ||
	fail "line format: $(messages | head -c 600)"
stub_is 'any(" **ERROR** logger: severe 0002" in l for l in lines("1234567890"))' || fail "error records"
stub_is 'all(b["t"] - a["t"] >= 1.9 for h in ("1234567890",) for hm in [[r for r in m if r["hook"] == h]] for a, b in zip(hm, hm[5:]))' ||
	fail "more than 5 requests in 2 s to a webhook"
ok "150 warn records in $N messages (each <= 2000 characters, valid JSON, at most 5 per 2 s), in order; errors too"

# ---- 429: waits retry_after, then the same batch again
stub "script?hook=1234567890&codes=429&retry_after=0.5"
say logger '{"n": 2, "level": "warn", "prefix": "limited"}'
wait_for 10 "the batch after the 429" stub_is 'len(tagged("1234567890", "limited")) == 2'
messages | "$PY" -c "import json,sys
m=[r for r in json.load(sys.stdin) if ' limited ' in (r['content'] or '')]
assert [r['status'] for r in m] == [429, 204], [r['status'] for r in m]
assert m[0]['content'] == m[1]['content'], 'not the same batch'
d = m[1]['t'] - m[0]['t']
assert d >= 0.5, 'sent again after %.3f s' % d
print('%.3f' % d)" >"$T/d429" 2>&1 || fail "429: $(cat "$T/d429")"
status_is 'w1["rate_limited"] >= 1' || fail "rate_limited not counted"
ok "a 429 is waited out ($(cat "$T/d429") s >= retry_after 0.5 s) and the same batch sent again"

# ---- 500: retried with backoff
stub "script?hook=1234567890&codes=500,500"
say logger '{"n": 1, "level": "error", "prefix": "flaky"}'
wait_for 10 "the batch after two 500s" stub_is 'len(tagged("1234567890", "flaky")) == 1'
messages | "$PY" -c "import json,sys
m=[r for r in json.load(sys.stdin) if ' flaky ' in (r['content'] or '')]
assert [r['status'] for r in m] == [500, 500, 204], [r['status'] for r in m]
assert len(set(r['content'] for r in m)) == 1" || fail "500: $(messages)"
status_is 'w1["failures"] >= 2 and w1["last_status"] == 204 and w1["last_error"] is None' ||
	fail "after 500s: $(ctl discord status --json)"
ok "500 is retried (backoff) until delivered"

# ---- routes: router's records (info and up) go to webhook #2 only
say router '{"n": 3, "level": "info", "prefix": "routed"}'
wait_for 10 "router's records at webhook #2" stub_is 'tagged("4567", "routed") == ["0000", "0001", "0002"]'
stub_is 'not tagged("1234567890", "routed") and not tagged("4567", "batch")' || fail "routes mixed up"
stub_is 'any(" **INFO** router: routed 0000" in l for l in lines("4567"))' || fail "routed line"
ok "a route sends an agent's records (from its own min_level) to its own webhook"

# ---- discord test
ctl discord test "hello from the test" >"$T/test.out" 2>&1 || fail "discord test: $(cat "$T/test.out")"
[ "$(grep -c 'delivered' "$T/test.out")" = 2 ] || fail "discord test: $(cat "$T/test.out")"
stub_is 'any("hello from the test" in l for l in lines("1234567890")) and any("hello from the test" in l for l in lines("4567"))' ||
	fail "the test message did not arrive"
stub "script?hook=4567&codes=404"
ctl discord test "refused" >"$T/test2.out" 2>&1 && fail "discord test with a 404 succeeded"
grep -q "#2.*failed: HTTP 404: Unknown Webhook" "$T/test2.out" || fail "discord test 404: $(cat "$T/test2.out")"
grep -q "#1.*delivered" "$T/test2.out" || fail "discord test 404: $(cat "$T/test2.out")"
ok "discord test answers when delivered (and says which webhook failed)"

# ---- outage: bounded queue, dropped records counted, kept across a reload
stub down
say logger '{"n": 260, "level": "warn", "prefix": "outage"}'
wait_for 10 "the queue full" status_is 'w1["queued"] == 200 and w1["dropped"] >= 60 and w1["last_status"] == 0'
ctl discord status >"$T/dstatus.txt" 2>&1 || fail "discord status"
status_is 'w1["failures"] >= 3 and w1["last_error"]' || fail "status during the outage: $(ctl discord status --json)"
ctl ext reload discord >/dev/null 2>&1 || fail "ext reload discord"
wait_for 10 "the reload" sh -c "'$DREAMOS' ctl --runtime '$RT' ext info discord --json | grep -q '\"reloads\": 1'"
status_is 'w1["queued"] == 200 and w1["dropped"] >= 60 and w1["sent_records"] >= 150' ||
	fail "the queue or counters were lost in the reload: $(ctl discord status --json)"
ok "down: the queue stays at queue_max, dropped records are counted, and both survive a hot reload"
stub up
wait_for 15 "the 'records dropped' line" stub_is 'any("records dropped" in l for l in lines("1234567890"))'
messages | "$PY" -c "import json,re,sys
m=[r for r in json.load(sys.stdin) if r['status'] == 204 and r['hook'] == '1234567890']
lines=[l for r in m for l in r['content'].split('\n')]
got=[l.split(' outage ')[1] for l in lines if ' outage ' in l]
k=len(got)
assert got == ['%04d' % i for i in range(k)], got
assert k >= 150, k
note=[i for i, l in enumerate(lines) if 'records dropped' in l]
assert len(note) == 1, note
n=int(re.search(r'(\d+) records? dropped', lines[note[0]]).group(1))
assert n >= 260 - k, (n, k)
last=max(i for i, l in enumerate(lines) if ' outage ' in l)
assert note[0] > last, 'the notice came before the last queued record'
print(k, n)" >"$T/outage" 2>&1 || fail "after the outage: $(cat "$T/outage")"
wait_for 5 "an empty queue" status_is 'w1["queued"] == 0 and w1["last_status"] == 204'
stub_is 'not any("outbound:" in l for r in m for l in (r["content"] or "").split("\n"))' ||
	fail "the outbound manager's failure lines were mirrored"
stub_is 'not tagged("1234567890", "quiet")' || fail "info records of logger were mirrored"
ok "back up: queued records in order ($(cut -d' ' -f1 "$T/outage")), then '$(cut -d' ' -f2 "$T/outage") records dropped'; no failure lines mirrored"

# ---- the webhook URLs never show
ctl status --json >"$T/status.json" || fail "status --json"
ctl discord status --json >"$T/dstatus.json" || fail "discord status --json"
ctl discord status >>"$T/dstatus.txt" 2>&1
ctl ext info discord --json >"$T/extinfo.json" 2>&1
ctl logs --limit 5000 >"$T/logs.txt" 2>&1
ctl logs --source discord --limit 500 >"$T/dlogs.txt" 2>&1
grep -q "webhook #1: connection refused" "$T/dlogs.txt" || fail "no warning about the outage: $(cat "$T/dlogs.txt")"
[ "$(grep -c "webhook #1: queue full (200 records)" "$T/dlogs.txt")" = 1 ] || fail "'queue full' not said once: $(cat "$T/dlogs.txt")"
grep -q "webhook #1: queue drained; [0-9]* records were dropped while it was full" "$T/dlogs.txt" ||
	fail "no 'queue drained' line: $(cat "$T/dlogs.txt")"
grep -q '#1' "$T/dstatus.txt" || fail "discord status: $(cat "$T/dstatus.txt")"
ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
for tok in "$TOKEN1" "$TOKEN2"; do
	LEAK=$(grep -rl -- "$tok" "$RT" "$T"/*.json "$T"/*.txt "$T/headless.out" "$T/headless.err" "$T"/test*.out 2>/dev/null)
	[ -z "$LEAK" ] || fail "a webhook URL leaked into: $LEAK"
done
grep -q "Sanitizer\|runtime error" "$T/headless.err" && fail "sanitizer report: $(grep -m3 'Sanitizer\|runtime error' "$T/headless.err")"
ok "the webhook URLs are in no log file, store, ctl logs, status --json or discord status; clean shutdown"

# ---- not configured: loads, says so, no subscription and no timer
cat >"$T/bare.yaml" <<EOF
bridge:
  enabled: false
extensions:
  dir: $T/ext
  load: [discord]
EOF
RT="$T/rt2"
start_headless --config "$T/bare.yaml"
wait_for 10 "the discord extension" sh -c "'$DREAMOS' ctl --runtime '$RT' ext list | grep -q 'discord  *1\.0'"
ctl discord status --json | jtest 'j["configured"] is False and "not configured" in j["status"]' ||
	fail "unconfigured status: $(ctl discord status --json)"
ctl ext info discord --json | jtest 'j["resources"]["timers"] == 0 and j["resources"]["subscriptions"] == 0 and j["resources"]["requests"] == 0' ||
	fail "unconfigured but busy: $(ctl ext info discord --json)"
ctl discord test >/dev/null 2>&1 && fail "discord test without a webhook succeeded"
ctl logs --source discord --level warn >"$T/bare-logs.txt" 2>&1
grep -q "discord" "$T/bare-logs.txt" && fail "unconfigured but not quiet: $(cat "$T/bare-logs.txt")"
ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
grep -q "Sanitizer\|runtime error" "$T/headless.err" && fail "sanitizer report (unconfigured)"
ok "without a webhook: loads, 'not configured', no subscription, no timer, no warning"
