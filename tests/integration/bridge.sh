#!/bin/sh
# bridge.sh — the Bridge (dreamos-bridge(7)) end to end with curl and a
# WebSocket client (tests/helpers/wsclient.py): every endpoint, every role
# boundary, API keys and session tokens (expiry with an injected clock,
# revocation), Origin checks, bad input and attacks (bad JSON, 10 MB bodies,
# header floods, a slow client, malformed HTTP, malformed WebSocket frames,
# 1,000 connections beyond max_connections), a remote agent on the Python SDK
# that gets a message and a task and acks them and gets a message again after
# it reconnects, observers, rate limits, the audit chain catching an edited
# and a deleted row, TLS with a self-signed certificate, a remote agent
# throttled by a slow recipient's full queue that is killed while held,
# a remote agent whose writes block that gets every message of a window of
# 20,000 on one connection (also with copies sent after an ack timeout), one
# that stops reading, which is let go, and one that reads slowly, which gets
# all that was queued before its close.
#
# Three dreamos runs on one runtime: (1) plain HTTP, most of the tests;
# (2) after editing an audit row: audit verify, rate limits and the connection
# flood (small security.rate_limit and bridge.max_connections); (3) after
# deleting the newest audit row: audit verify again, then TLS.  Between (1)
# and (2), six on runtimes of their own: the throttled remote agent (small
# bus.high_water and heartbeat_timeout), the big window (bus.window 20,000),
# the same with an ack timeout of 3 s, the agent that stops reading (small
# heartbeat_timeout), the one that reads slowly.
. "${top_srcdir:-.}/tests/integration/lib.sh"

TOP=$(cd "${top_srcdir:-.}" && pwd)
PY=${PYTHON3:-python3}
command -v curl >/dev/null 2>&1 || { echo "SKIP: curl not found"; exit 77; }
command -v "$PY" >/dev/null 2>&1 || { echo "SKIP: python3 not found"; exit 77; }
export PYTHONPATH="$TOP/tests/helpers${PYTHONPATH:+:$PYTHONPATH}"
export DREAMOS_TEST_CLOCK_FILE="$T/clock"
echo 0 >"$T/clock"
SCHEME=http
CURLTLS=""
JSON="Content-Type: application/json"
export no_proxy='*' NO_PROXY='*'

# ---- helpers ----------------------------------------------------------------

# st METHOD PATH TOKEN [CURL-ARGS...]: does the request and prints the status
# (000 if there was no answer); the body goes to $T/body, headers to $T/hdr.
st() {
	_m=$1 _p=$2 _t=$3
	shift 3
	: >"$T/body"
	: >"$T/hdr"
	if [ -n "$_t" ]; then
		curl -s $CURLTLS --max-time 10 -o "$T/body" -D "$T/hdr" -w '%{http_code}' \
			-X "$_m" -H "Authorization: Bearer $_t" "$@" "$BASE$_p"
	else
		curl -s $CURLTLS --max-time 10 -o "$T/body" -D "$T/hdr" -w '%{http_code}' \
			-X "$_m" "$@" "$BASE$_p"
	fi
}

# expect CODE METHOD PATH TOKEN [CURL-ARGS...]: the request must get CODE.
expect() {
	_want=$1
	shift
	_got=$(st "$@")
	[ "$_got" = "$_want" ] ||
		fail "$1 $2: expected $_want, got $_got: $(head -c 300 "$T/body")"
}

# errcode: the "error.code" of the JSON error body in $T/body.
errcode() { json_get 'j["error"]["code"]' <"$T/body"; }
# errmsg: its "error.message".
errmsg() { json_get 'j["error"]["message"]' <"$T/body"; }
# header NAME: the value of a response header in $T/hdr.
header() {
	awk -v n="$1" 'BEGIN { n = tolower(n) }
		{ sub(/\r$/, ""); i = index($0, ":")
		  if (i > 0 && tolower(substr($0, 1, i - 1)) == n) {
			v = substr($0, i + 1); sub(/^[ \t]*/, "", v); print v; exit } }' "$T/hdr"
}

# newkey NAME ROLE: creates an API key; sets KEY and KEYID.
newkey() {
	ctl apikey create "$1" --role "$2" --json >"$T/key.json" || fail "apikey create $1 --role $2"
	KEY=$(json_get 'j["key"]' <"$T/key.json")
	KEYID=$(json_get 'j["id"]' <"$T/key.json")
}

# token KEY: prints a session token for the API key.
token() {
	_s=$(st POST /v1/auth/token "$1")
	[ "$_s" = 200 ] || fail "POST /v1/auth/token: $_s $(cat "$T/body")"
	json_get 'j["token"]' <"$T/body"
}

# until_ok SECONDS CMD...: runs CMD every 0.1 s until it succeeds; returns 1
# if it has not after SECONDS.
until_ok() {
	_n=$(($1 * 10))
	shift
	_i=0
	until "$@" >/dev/null 2>&1; do
		_i=$((_i + 1))
		[ $_i -ge $_n ] && return 1
		sleep 0.1
	done
}

# start_bridge CONFIG: starts dreamos with CONFIG and --bridge-port 0; sets
# PORT and BASE.
start_bridge() {
	start_headless --config "$1" --bridge-port 0
	PORT=$(ctl status --json | json_get 'j["bridge"]["port"]')
	case $PORT in '' | 0 | None) fail "no Bridge port in status" ;; esac
	BASE=$SCHEME://127.0.0.1:$PORT
}

# stop_dreamos: SIGTERM, exit status 0.
stop_dreamos() {
	kill -TERM "$PID"
	wait_exit "$PID" 10
	[ "$RC" = 0 ] || fail "dreamos exit status $RC"
}

# alive: dreamos still runs and answers, on the socket and on the Bridge.
alive() {
	kill -0 "$PID" 2>/dev/null || fail "dreamos died"
	ctl status >/dev/null || fail "ctl status after $1"
	[ "$(st GET /healthz "")" = 200 ] || fail "/healthz after $1"
}

# known_bug TEXT: a documented behaviour that does not hold yet (reported);
# said on stderr, does not fail the test.
known_bug() { echo "# KNOWN BUG (not failing the test): $*" >&2; }

# agent_state NAME: prints the state of agent NAME ("none" if unknown).
agent_state() {
	ctl agent list --json | json_get "next((a['state'] for a in j if a['name'] == '$1'), 'none')"
}
state_is() { [ "$(agent_state "$1")" = "$2" ]; }

# remote_events EV: the REMOTE_LOG events of kind EV, one JSON per line.
remote_events() { grep "\"ev\": \"$1\"" "$T/remote.log" 2>/dev/null; }

cat >"$T/a.yaml" <<EOF
extensions:
  load: []          # the core alone: no extensions' agents in the metrics
bridge:
  connection_timeout: 2s
  max_request: 1MiB
security:
  token_expiry: 3600s
  allowed_origins: [https://console.example]
agents:
  heartbeat_timeout: 10s
  hello_timeout: 2s
EOF

# =========================================================================
# Run 1: plain HTTP
# =========================================================================
start_bridge "$T/a.yaml"
ctl bridge status | grep -q "http://127.0.0.1:$PORT" || fail "bridge status address"
ok "dreamos with --bridge-port 0 listens on port $PORT"

# ---- /healthz needs no key --------------------------------------------------
expect 200 GET /healthz ""
[ "$(json_get 'j["status"]' <"$T/body")" = ok ] || fail "healthz status: $(cat "$T/body")"
json_get 'j["uptime_s"] >= 0 and j["db"] == "ok" and "agents_up" in j' <"$T/body" | grep -q True ||
	fail "healthz fields: $(cat "$T/body")"
ok "GET /healthz without a key: 200 {status, uptime_s, db, agents_up}"

# ---- keys and tokens ----------------------------------------------------------
newkey cap captain
KCAP=$KEY
newkey ops operator
KOPS=$KEY
newkey obs observer
KOBS=$KEY
newkey rem1 agent
KREM1=$KEY
newkey rem2 agent
KREM2=$KEY
newkey victim operator
KVIC=$KEY
VICID=$KEYID
ctl apikey list --json | json_get 'len(j)' | grep -qx 6 || fail "apikey list"
ctl apikey list --json | grep -q dos_ && fail "apikey list shows a key"
sqlite3_has_key=$("$PY" -c "
import sqlite3, sys
db = sqlite3.connect('file:$RT/dreamos.db?mode=ro', uri=True)
print(any('$KCAP' in ' '.join(map(str, r)) for r in db.execute('SELECT * FROM apikeys')))")
[ "$sqlite3_has_key" = False ] || fail "an API key is stored in clear"
grep -rq "$KCAP" "$RT/logs" && fail "an API key reached the log"
ok "apikey create (6 keys, one per role); stored hashed, never listed or logged"

expect 200 POST /v1/auth/token "$KOPS"
json_get 'j["token_type"] == "Bearer" and j["role"] == "operator" and j["name"] == "ops" and j["expires_in"] == 3600 and type(j["expires_in"]) is int and j["token"].startswith("dost_")' <"$T/body" |
	grep -q True || fail "token answer: $(cat "$T/body")"
TOPS=$(json_get 'j["token"]' <"$T/body")
expect 200 POST /v1/auth/token "" -H "$JSON" --data-binary "{\"api_key\": \"$KOBS\"}"
TOBS=$(json_get 'j["token"]' <"$T/body")
TCAP=$(token "$KCAP")
TREM1=$(token "$KREM1")
TREM2=$(token "$KREM2")
TVIC=$(token "$KVIC")
grep -rq "$TOPS" "$RT/logs" && fail "a session token reached the log"
ok "POST /v1/auth/token: key in Authorization or in {\"api_key\"} gives a dost_ token"

# ---- no key, wrong key, wrong token -----------------------------------------
expect 401 POST /v1/auth/token ""
[ "$(errcode)" = unauthorized ] || fail "no key: $(cat "$T/body")"
header WWW-Authenticate | grep -q Bearer || fail "401 without WWW-Authenticate"
expect 401 POST /v1/auth/token "dos_thisisnotakey"
errmsg | grep -q "invalid API key" || fail "wrong key: $(cat "$T/body")"
expect 401 POST /v1/auth/token "" -H "$JSON" --data-binary '{"api_key": 5}'
expect 405 GET /v1/auth/token "$KOPS"
header Allow | grep -q POST || fail "405 without Allow: POST"
expect 401 GET /v1/agents ""
errmsg | grep -q "session token" || fail "no token message: $(cat "$T/body")"
expect 401 GET /v1/agents "dost_forged"
errmsg | grep -q "invalid token" || fail "forged token: $(cat "$T/body")"
expect 401 GET /v1/agents "$KOPS"
expect 401 GET /v1/agents "" -H "Authorization: Basic b3BzOm9wcw=="
expect 401 GET /metrics ""
ok "no key, a wrong key, a forged token, an API key as token, Basic auth: 401 + WWW-Authenticate"

# ---- revocation ends a key's tokens at once ---------------------------------
expect 200 GET /v1/agents "$TVIC"
# An open WebSocket of the key is ended too (its events must stop).
"$PY" - "$PORT" "$TVIC" "$DREAMOS" "$RT" "$VICID" <<'EOF' >"$T/revoke-ws.out" 2>&1 || fail "revocation: $(cat "$T/revoke-ws.out")"
import json, subprocess, sys
from wsclient import WebSocket, Closed
port, tok, dreamos, rt, kid = sys.argv[1:6]
ws = WebSocket.connect("ws://127.0.0.1:%s/v1/stream" % port, headers={"Authorization": "Bearer " + tok})
ws.send_text(json.dumps({"type": "subscribe", "events": ["logs"]}))
assert json.loads(ws.recv_text(timeout=5))["type"] == "subscribed"
out = subprocess.run([dreamos, "ctl", "--runtime", rt, "apikey", "revoke", kid],
                     capture_output=True, text=True, check=True).stdout
assert "revoked" in out, out
try:
    e = ws.wait_closed(2)
    print("closed %s" % e.code)
except TimeoutError:
    print("KNOWN the WebSocket of a revoked key stays open (and keeps getting events)")
ws.shutdown()
EOF
grep KNOWN "$T/revoke-ws.out" | while read -r _ line; do known_bug "$line"; done
expect 401 GET /v1/agents "$TVIC"
errmsg | grep -q "revoked" || fail "revoked token: $(cat "$T/body")"
expect 401 POST /v1/auth/token "$KVIC"
errmsg | grep -q "revoked API key" || fail "revoked key: $(cat "$T/body")"
ctl apikey revoke "$VICID" >/dev/null 2>&1 && fail "revoking twice must fail"
ctl apikey revoke 9999 >/dev/null 2>&1 && fail "revoking an unknown key must fail"
ctl apikey list --json | json_get "[k['revoked'] for k in j if k['id'] == $VICID][0]" | grep -q True ||
	fail "apikey list: not revoked"
ok "a revoked key: its token and new exchanges get 401 'revoked API key'"

# ---- the remote agent (Python SDK over the WebSocket) ------------------------
DREAMOS_BRIDGE_URL="ws://127.0.0.1:$PORT" DREAMOS_API_KEY="$KREM1" REMOTE_LOG="$T/remote.log" \
	"$PY" "$TOP/tests/agents/remote_agent.py" 2>"$T/remote.err" &
RPID=$!
PIDS="$PIDS $RPID"
until_ok 10 state_is rem1 ready || fail "remote agent rem1 not ready: $(cat "$T/remote.err")"
remote_events welcome | grep -q '"agent": "rem1"' || fail "remote agent not welcomed"
ok "a remote agent (SDK, API key -> token -> WebSocket) is ready as rem1"

# ---- every endpoint -------------------------------------------------------------
expect 200 GET /metrics "$TOBS"
grep -q '^dreamos_agents{state="ready"} 1' "$T/body" || fail "metrics: agents"
for m in dreamos_messages_total dreamos_tasks dreamos_bridge_connections \
	dreamos_bridge_requests_total dreamos_bridge_rate_limited_total \
	dreamos_bridge_auth_failures_total dreamos_bridge_request_seconds_bucket \
	dreamos_store_commits_total; do
	grep -q "^$m" "$T/body" || fail "metrics: no $m"
done
header Content-Type | grep -q "text/plain" || fail "metrics content type"
ok "GET /metrics: Prometheus text"

expect 200 GET /v1/agents "$TOBS"
json_get '[a["name"] for a in j]' <"$T/body" | grep -q rem1 || fail "/v1/agents: $(cat "$T/body")"
expect 200 GET "/v1/agents?state=ready" "$TOBS"
json_get 'len(j) == 1 and j[0]["name"] == "rem1"' <"$T/body" | grep -q True || fail "?state=ready"
ok "GET /v1/agents, ?state="

expect 201 POST /v1/messages "$TOPS" -H "$JSON" --data-binary '{"to": "rem1", "body": {"n": 1}, "priority": "high", "mode": "SYNC"}'
MSG1=$(json_get 'j["id"]' <"$T/body")
json_get 'j["recipients"]' <"$T/body" | grep -qx 1 || fail "recipients: $(cat "$T/body")"
until_ok 5 grep -q "\"id\": $MSG1," "$T/remote.log" || fail "remote agent did not get message $MSG1"
# acked ID [AGENT]: message ID is acked by AGENT (rem1).
acked() {
	ctl history "${2:-rem1}" --json |
		json_get "[m['deliveries'] for m in j if m['id'] == $1][0]" | grep -q "${2:-rem1}:acked"
}
until_ok 5 acked "$MSG1" || fail "message $MSG1 not acked: $(ctl history rem1)"
expect 200 GET "/v1/messages?agent=rem1&limit=5" "$TOBS"
json_get "[m['id'] for m in j]" <"$T/body" | grep -q "$MSG1" || fail "GET /v1/messages: $(cat "$T/body")"
expect 200 GET "/v1/messages?grep=nomatchatall" "$TOBS"
json_get 'len(j)' <"$T/body" | grep -qx 0 || fail "?grep="
expect 404 POST /v1/messages "$TOPS" -H "$JSON" --data-binary '{"to": "nobody", "body": 1}'
expect 201 POST /v1/messages "$TOPS" -H "$JSON" --data-binary '{"to": "#news", "body": "x"}'
ok "POST /v1/messages -> the remote agent gets it and acks it; GET /v1/messages shows it acked"

expect 201 POST /v1/tasks "$TOPS" -H "$JSON" --data-binary '{"title": "remote work", "payload": {"k": 7}, "capability": "remote", "priority": "urgent", "timeout_s": 30}'
TASK1=$(json_get 'j["id"]' <"$T/body")
task_done() {
	st GET "/v1/tasks/$1" "$TOBS" >/dev/null
	json_get 'j["state"]' <"$T/body" | grep -qx done
}
until_ok 5 task_done "$TASK1" || fail "task $TASK1 not done: $(cat "$T/body")"
json_get 'j["result"]' <"$T/body" | grep -q "'by': 'rem1'" || fail "task result: $(cat "$T/body")"
remote_events task | grep -q "\"id\": $TASK1," || fail "remote agent did not log task $TASK1"
expect 200 GET /v1/tasks "$TOBS"
json_get "[t['id'] for t in j]" <"$T/body" | grep -q "$TASK1" || fail "GET /v1/tasks"
expect 200 GET "/v1/tasks?state=done&limit=5" "$TOBS"
expect 409 DELETE "/v1/tasks/$TASK1" "$TOPS"
expect 201 POST /v1/tasks "$TOPS" -H "$JSON" --data-binary '{"title": "never", "capability": "nobody-has-this"}'
TASK2=$(json_get 'j["id"]' <"$T/body")
expect 200 DELETE "/v1/tasks/$TASK2" "$TOPS"
st GET "/v1/tasks/$TASK2" "$TOBS" >/dev/null
json_get 'j["state"]' <"$T/body" | grep -qx cancelled || fail "task $TASK2 not cancelled"
expect 404 GET /v1/tasks/99999 "$TOBS"
expect 404 DELETE /v1/tasks/99999 "$TOPS"
expect 400 POST /v1/tasks "$TOPS" -H "$JSON" --data-binary '{"title": "forever", "timeout_s": 1e300}'
errmsg | grep -q "at most 100 years" || fail "timeout_s 1e300: $(cat "$T/body")"
ok "POST /v1/tasks -> the remote agent does it; GET /v1/tasks[/ID]; DELETE: 200, 409 when done, 404; a timeout beyond 100 years: 400"

expect 200 GET "/v1/logs?source=bridge&limit=5" "$TOBS"
json_get 'len(j) >= 1' <"$T/body" | grep -q True || fail "GET /v1/logs: $(cat "$T/body")"
expect 200 GET "/v1/logs?level=error&grep=zzznothing" "$TOBS"
ok "GET /v1/logs with filters"

expect 200 POST /v1/commands "$TCAP" -H "$JSON" --data-binary '{"command": "agent list"}'
json_get 'j["status"] == 0 and "rem1" in j["output"]' <"$T/body" | grep -q True || fail "commands: $(cat "$T/body")"
expect 200 POST /v1/commands "$TCAP" -H "$JSON" --data-binary '{"command": "log level info"}'
expect 400 POST /v1/commands "$TCAP" -H "$JSON" --data-binary '{"command": "frobnicate"}'
json_get '"error" in j' <"$T/body" | grep -q True || fail "a failed command carries error"
expect 400 POST /v1/commands "$TCAP" -H "$JSON" --data-binary '{"command": "log level verbose --json"}'
expect 409 POST /v1/commands "$TCAP" -H "$JSON" --data-binary '{"command": "apikey revoke 99999"}'
ctl audit --json --limit 200 | json_get "[(a['detail'], a['ok']) for a in j if a['actor'] == 'bridge:cap' and a['action'] == 'command']" >"$T/audited"
grep -qF "('log level info', True)" "$T/audited" || fail "the captain command from the Bridge is not audited: $(cat "$T/audited")"
grep -qF "('log level verbose --json', False)" "$T/audited" || fail "a failed command audited as succeeded, or without its options: $(cat "$T/audited")"
grep -qF "('apikey revoke 99999', False)" "$T/audited" || fail "a failed revoke audited as succeeded: $(cat "$T/audited")"
ok "POST /v1/commands: a captain command line, audited with its options and its outcome"

expect 400 GET /v1/stream "$TOBS"
expect 404 GET /v1/nothing "$TOBS"
expect 404 GET /v1/tasks/1/x "$TOBS"
expect 405 PUT /v1/agents "$TCAP"
header Allow | grep -qx GET || fail "405 Allow: $(header Allow)"
expect 405 PATCH /v1/tasks "$TCAP"
header Allow | grep -q "GET, POST" || fail "405 Allow for /v1/tasks"
ok "GET /v1/stream without upgrade 400; unknown paths 404; wrong methods 405 with Allow"

# ---- role boundaries ------------------------------------------------------------
# observer: reads only
for p in /metrics /v1/agents /v1/tasks /v1/messages /v1/logs "/v1/tasks/$TASK1"; do
	expect 200 GET "$p" "$TOBS"
done
expect 403 POST /v1/messages "$TOBS" -H "$JSON" --data-binary '{"to": "rem1", "body": 1}'
[ "$(errcode)" = forbidden ] || fail "403 code"
errmsg | grep -q "needs role operator" || fail "403 message: $(cat "$T/body")"
expect 403 POST /v1/tasks "$TOBS" -H "$JSON" --data-binary '{"title": "x"}'
expect 403 DELETE "/v1/tasks/$TASK2" "$TOBS"
expect 403 POST /v1/commands "$TOBS" -H "$JSON" --data-binary '{"command": "status"}'
# operator: acts, but no captain commands
expect 403 POST /v1/commands "$TOPS" -H "$JSON" --data-binary '{"command": "status"}'
errmsg | grep -q "needs role captain" || fail "403 message: $(cat "$T/body")"
expect 200 GET /v1/agents "$TOPS"
# captain: everything
expect 201 POST /v1/tasks "$TCAP" -H "$JSON" --data-binary '{"title": "by the captain", "capability": "nobody-has-this"}'
expect 200 GET /metrics "$TCAP"
# agent: only /v1/stream, as itself
for p in /metrics /v1/agents /v1/tasks /v1/messages /v1/logs; do
	expect 403 GET "$p" "$TREM2"
done
expect 403 POST /v1/messages "$TREM2" -H "$JSON" --data-binary '{"to": "rem1", "body": 1}'
expect 403 POST /v1/commands "$TREM2" -H "$JSON" --data-binary '{"command": "status"}'
ctl audit --json --limit 200 | json_get "len([a for a in j if a['action'] == 'denied' and not a['ok']])" >"$T/n"
[ "$(cat "$T/n")" -ge 10 ] || fail "denials are not audited ($(cat "$T/n"))"
ok "roles: observer reads, operator acts, captain commands, agent keys only stream; denials audited"

# ---- the agent key used for another agent, name taken, hello rules -----------
"$PY" - "$PORT" "$TREM2" "$TREM1" <<'EOF' >"$T/names.out" || fail "agent key boundaries: $(cat "$T/names.out")"
import json, sys
from wsclient import WebSocket, Closed
port, trem2, trem1 = sys.argv[1], sys.argv[2], sys.argv[3]
url = "ws://127.0.0.1:%s/v1/stream" % port
def conn(tok):
    return WebSocket.connect(url, headers={"Authorization": "Bearer " + tok})
def hello(name):
    return json.dumps({"type": "hello", "proto": 1, "name": name})
def refused(tok, name, code, close):
    """hello as name: an error code, then the close code."""
    ws = conn(tok)
    ws.send_text(hello(name))
    msgs = []
    try:
        while True:
            msgs.append(json.loads(ws.recv_text(timeout=5)))
    except Closed as e:
        assert e.code == close, (e, msgs)
    if not any(m.get("code") == code for m in msgs):
        print("KNOWN the %s error before close %d never arrives (got %s)" % (code, close, msgs))
# rem2's key, hello as rem1: name_mismatch, close 4003
refused(trem2, "rem1", "name_mismatch", 4003)
# rem1's key while rem1 is connected (the SDK agent): name_taken, close 4009
refused(trem1, "rem1", "name_taken", 4009)
# rem2 as itself: something else first gets hello_first, bad JSON an error,
# then hello is welcomed, a second hello is refused, then a clean close
ws = conn(trem2)
ws.send_text('{"type": "heartbeat"}')
m = json.loads(ws.recv_text(timeout=5))
assert m["code"] == "hello_first", m
ws.send_text("{not json")
m = json.loads(ws.recv_text(timeout=5))
assert m["type"] == "error", m
ws.send_text(hello("rem2"))
m = json.loads(ws.recv_text(timeout=5))
assert m["type"] == "welcome" and m["agent"] == "rem2", m
ws.send_text(hello("rem2"))
m = json.loads(ws.recv_text(timeout=5))
assert m["code"] == "duplicate_hello", m
ws.ping(b"p1")
ws.send_text('{"type": "heartbeat"}')
assert ws.close(1000, "bye") is not None
EOF
grep KNOWN "$T/names.out" | while read -r _ line; do known_bug "$line"; done
ok "agent keys: another agent's name -> close 4003 (name_mismatch); a connected name -> 4009; hello rules"

# An agent key that never says hello must be disconnected after
# hello_timeout (dreamos-protocol(7), HANDSHAKE 2).
"$PY" - "$PORT" "$TREM2" <<'EOF' >"$T/hello-timeout.out" 2>&1
import sys
from wsclient import WebSocket
ws = WebSocket.connect("ws://127.0.0.1:%s/v1/stream" % sys.argv[1],
                       headers={"Authorization": "Bearer " + sys.argv[2]})
try:
    print("closed %s" % ws.wait_closed(4.5).code)
except TimeoutError:
    print("still open")
EOF
if grep -q closed "$T/hello-timeout.out"; then
	ok "a remote agent without hello is disconnected after hello_timeout"
else
	known_bug "a WebSocket with an agent key that never says hello stays open past agents.hello_timeout (2 s): $(cat "$T/hello-timeout.out")"
fi

# ---- redelivery after the remote agent reconnects ------------------------------
expect 201 POST /v1/messages "$TOPS" -H "$JSON" --data-binary '{"to": "rem1", "body": {"drop": true}}'
MSG2=$(json_get 'j["id"]' <"$T/body")
two_deliveries() { [ "$(grep -c "\"id\": $MSG2," "$T/remote.log")" -ge 2 ]; }
until_ok 10 two_deliveries || fail "message $MSG2 not redelivered: $(cat "$T/remote.log")"
grep "\"id\": $MSG2," "$T/remote.log" | sed -n 2p | grep -q '"attempt": 2' || fail "the redelivery is not attempt 2"
[ "$(remote_events welcome | wc -l)" -ge 2 ] || fail "the remote agent did not reconnect"
remote_events welcome | sed -n 2p | grep -q '"connections": 2' || fail "second welcome"
until_ok 5 acked "$MSG2" || fail "message $MSG2 not acked after the reconnection"
until_ok 5 state_is rem1 ready || fail "rem1 not ready after reconnecting"
ok "a dropped connection: the unacked message comes again (attempt 2) after the SDK reconnects, then is acked"

# A message waiting for a disconnected remote agent is delivered when it
# comes back; welcome comes first (dreamos-protocol(7), HANDSHAKE 4).
expect 201 POST /v1/messages "$TOPS" -H "$JSON" --data-binary '{"to": "rem2", "body": "while away"}'
MSGW=$(json_get 'j["id"]' <"$T/body")
"$PY" - "$PORT" "$TREM2" "$MSGW" <<'EOF' >"$T/order.out" || fail "inbox after reconnecting: $(cat "$T/order.out")"
import json, sys
from wsclient import WebSocket
ws = WebSocket.connect("ws://127.0.0.1:%s/v1/stream" % sys.argv[1],
                       headers={"Authorization": "Bearer " + sys.argv[2]})
ws.send_text(json.dumps({"type": "hello", "proto": 1, "name": "rem2", "max_tasks": 0}))
got = [json.loads(ws.recv_text(timeout=5)) for _ in range(2)]
if got[0]["type"] != "welcome":
    print("KNOWN order: %s" % [m["type"] for m in got])
m = [m for m in got if m["type"] == "message"][0]
assert m["id"] == int(sys.argv[3]) and m["body"] == "while away", m
ws.send_text(json.dumps({"type": "ack", "id": m["id"]}))
ws.send_text(json.dumps({"type": "heartbeat"}))
assert ws.close() is not None
EOF
grep -q "KNOWN order" "$T/order.out" &&
	known_bug "a reconnecting remote agent gets its pending messages before welcome: $(cat "$T/order.out")"
until_ok 5 acked "$MSGW" rem2 || fail "message $MSGW not acked by rem2"
ok "a message sent while a remote agent is away is delivered when it reconnects"

# ---- observers: live events over the WebSocket -------------------------------
"$PY" - "$PORT" "$TOBS" "$TOPS" <<'EOF' || fail "observer stream"
import json, sys, urllib.request
from wsclient import WebSocket
port, tobs, tops = sys.argv[1:4]
ws = WebSocket.connect("ws://127.0.0.1:%s/v1/stream?token=%s" % (port, tobs))
ws.send_text("hello?")
m = json.loads(ws.recv_text(timeout=5))
assert m["type"] == "error", m
ws.send_text(json.dumps({"type": "subscribe", "events": ["tasks", "messages", "agents"]}))
m = json.loads(ws.recv_text(timeout=5))
assert m == {"type": "subscribed", "agents": True, "messages": True, "tasks": True,
             "logs": False}, m
req = urllib.request.Request("http://127.0.0.1:%s/v1/tasks" % port, method="POST",
                             data=b'{"title": "watched", "capability": "nobody-has-this"}',
                             headers={"Authorization": "Bearer " + tops,
                                      "Content-Type": "application/json"})
tid = json.load(urllib.request.urlopen(req, timeout=5))["id"]
while True:
    m = json.loads(ws.recv_text(timeout=5))
    if m.get("kind") == "task" and m.get("id") == tid:
        break
ws.ping_wait(b"x")
assert ws.close() is not None
EOF
ok "an observer (?token=) subscribes and gets task events; a bad request gets an error"

# ---- Origin -----------------------------------------------------------------------
expect 403 GET /v1/agents "$TOBS" -H "Origin: https://evil.example"
errmsg | grep -q "Origin not allowed" || fail "Origin message"
expect 403 GET /healthz "" -H "Origin: https://evil.example"
expect 200 GET /healthz "" -H "Origin: https://console.example"
header Access-Control-Allow-Origin | grep -qx "https://console.example" || fail "CORS header"
expect 200 GET /v1/agents "$TOBS" -H "Origin: https://console.example"
header Access-Control-Allow-Origin | grep -qx "https://console.example" ||
	known_bug "no Access-Control-Allow-Origin on an allowed Origin's GET /v1/agents (only /healthz and OPTIONS get CORS headers)"
expect 204 OPTIONS /v1/agents "" -H "Origin: https://console.example" -H "Access-Control-Request-Method: GET"
header Access-Control-Allow-Methods | grep -q POST || fail "preflight"
expect 403 OPTIONS /v1/agents "" -H "Origin: https://evil.example"
"$PY" - "$PORT" "$TOBS" <<'EOF' || fail "WebSocket with a bad Origin"
import sys
from wsclient import WebSocket, HandshakeError
try:
    WebSocket.connect("ws://127.0.0.1:%s/v1/stream" % sys.argv[1], origin="https://evil.example",
                      headers={"Authorization": "Bearer " + sys.argv[2]})
    sys.exit("connected")
except HandshakeError as e:
    assert e.status == 403, e
EOF
ctl audit --json --limit 300 | json_get "len([a for a in j if a['action'] == 'origin.denied'])" >"$T/n"
[ "$(cat "$T/n")" -ge 3 ] || fail "origin denials not audited"
ok "a disallowed Origin: 403 (REST, preflight, WebSocket), audited; an allowed one gets CORS headers"

# ---- bad JSON bodies ---------------------------------------------------------------
for b in '{bad' '[]' '{"to": "rem1"}' '{"body": 1}' '{"to": 5, "body": 1}' \
	'{"to": "rem1", "body": 1, "priority": "extreme"}' '{"to": "rem1", "body": 1, "mode": "nope"}' \
	'{"to": "bad name!", "body": 1}' ''; do
	expect 400 POST /v1/messages "$TOPS" -H "$JSON" --data-binary "$b"
	[ "$(errcode)" = bad_request ] || fail "bad body $b: $(cat "$T/body")"
done
for b in '{bad' '"x"' '{"payload": 1}' '{"title": "x", "priority": "extreme"}'; do
	expect 400 POST /v1/tasks "$TOPS" -H "$JSON" --data-binary "$b"
done
expect 400 POST /v1/commands "$TCAP" -H "$JSON" --data-binary '{"cmd": "status"}'
expect 400 POST /v1/commands "$TCAP" -H "$JSON" --data-binary "$(printf '\377\376')"
alive "bad JSON"
ok "bad JSON bodies: 400 {error: {code: bad_request}}"

# ---- 10 MB bodies ------------------------------------------------------------------
head -c 10485760 /dev/zero | tr '\0' 'a' >"$T/10mb"
expect 413 POST /v1/messages "$TOPS" -H "$JSON" --data-binary "@$T/10mb"
[ "$(errcode)" = body_too_large ] || fail "413 code: $(cat "$T/body")"
"$PY" - "$PORT" "$TOPS" <<'EOF' || fail "10 MB chunked body"
# The same, chunked (no Content-Length): reading while sending.
import select, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n" % sys.argv[2].encode())
chunk = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
resp, sent = b"", 0
s.setblocking(False)
while sent < 160 and b"\r\n\r\n" not in resp:
    r, w, _ = select.select([s], [s], [], 5)
    if not r and not w:
        sys.exit("stuck")
    if r:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        resp += d
    elif w:
        try:
            s.send(chunk)
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
assert resp.startswith(b"HTTP/1.1 413 "), resp[:200]
EOF
alive "10 MB bodies"
ok "a 10 MB body (Content-Length or chunked): 413 body_too_large, dreamos unaffected"

# ---- header floods, malformed HTTP, pipelining, chunked ---------------------------
"$PY" - "$PORT" "$TOBS" <<'EOF' || fail "raw HTTP"
import re, socket, sys, time
port, tobs = int(sys.argv[1]), sys.argv[2].encode()

def raw(data, timeout=5):
    """Sends data and returns everything until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except ConnectionResetError:
        pass
    s.close()
    return out

def status(resp):
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else resp[:80]

cases = [
    (431, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
          + b"".join(b"X-Flood-%d: v\r\n" % i for i in range(200)) + b"\r\n"),
    (431, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"),
    (431, b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    (400, b"GARBAGE\r\n\r\n"),
    (400, b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n"),
    (400, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),  # TLS to plain HTTP
    (400, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    (400, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    (400, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    (400, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"),
    (400, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: v\r\n\r\n"),
    (400, b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tobs
          + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
          b"Sec-WebSocket-Key: short\r\nConnection: close\r\n\r\n"),
]
for want, data in cases:
    resp = raw(data)
    got = status(resp)
    assert got == want, (want, got, data[:60], resp[:200])
    if want >= 400:
        assert b'{"error":{"code":' in resp, resp[:300]
        assert b"\r\nConnection: close\r\n" in resp, resp[:300]
# Pipelined requests are answered in order on one connection.
resp = raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tobs + b"\r\n\r\n"
           b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
codes = [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", resp)]
assert codes == [200, 200, 404], (codes, resp[:500])
# A chunked body is accepted.
body = b'{"api_key": "dos_nokey"}'
chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5]) for i in range(0, len(body), 5))
resp = raw(b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
assert status(resp) == 401 and b"invalid API key" in resp, resp[:300]
EOF
alive "malformed HTTP"
ok "header floods 431; malformed requests 400 (+ close); pipelining in order; chunked bodies"

# ---- a slow client --------------------------------------------------------------------
"$PY" - "$PORT" <<'EOF' || fail "slow client"
# connection_timeout is 2 s: a request trickling in one byte every 0.3 s gets
# 408; an idle connection is closed; others are served meanwhile.
import socket, sys, time, urllib.request
port = int(sys.argv[1])
slow = socket.create_connection(("127.0.0.1", port), timeout=10)
idle = socket.create_connection(("127.0.0.1", port), timeout=10)
slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
t0 = time.monotonic()
served = 0
resp = b""
slow.settimeout(0.3)
while time.monotonic() - t0 < 8:
    try:
        slow.sendall(b"X")
    except OSError:
        pass
    try:
        d = slow.recv(65536)
        if not d:
            break
        resp += d
    except socket.timeout:
        pass
    except ConnectionResetError:
        break
    a = time.monotonic()
    urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5).read()
    assert time.monotonic() - a < 2.0, "a normal request was slow"
    served += 1
took = time.monotonic() - t0
assert resp.startswith(b"HTTP/1.1 408 "), resp[:200]
assert 1.5 < took < 6, took
assert served >= 3, served
idle.settimeout(5)
assert idle.recv(100) == b"", "idle connection not closed"
EOF
alive "a slow client"
ok "a slow client gets 408 after connection_timeout, an idle one is closed; others are served meanwhile"

# ---- malformed WebSocket frames ------------------------------------------------------
"$PY" - "$PORT" "$TOBS" <<'EOF' >"$T/frames.out" || fail "WebSocket frames: $(cat "$T/frames.out")"
import struct, sys
from wsclient import WebSocket, OP_TEXT, OP_CONT, OP_PING, OP_CLOSE
port, tobs = sys.argv[1], sys.argv[2]
def conn():
    return WebSocket.connect("ws://127.0.0.1:%s/v1/stream" % port,
                             headers={"Authorization": "Bearer " + tobs})
cases = [
    ("unmasked", 1002, lambda w: w.send_frame(OP_TEXT, b"{}", mask=False)),
    ("reserved opcode", 1002, lambda w: w.send_frame(0x3, b"x")),
    ("RSV1 without extension", 1002, lambda w: w.send_frame(OP_TEXT, b"{}", rsv=4)),
    ("continuation first", 1002, lambda w: w.send_frame(OP_CONT, b"x")),
    ("text inside a fragmented text", 1002,
     lambda w: (w.send_frame(OP_TEXT, b"{", fin=False), w.send_frame(OP_TEXT, b"}"))),
    ("bad close code", 1002, lambda w: w.send_frame(OP_CLOSE, struct.pack("!H", 999))),
    ("binary", 1003, lambda w: w.send_binary(b"\x00\x01")),
    ("invalid UTF-8", 1007, lambda w: w.send_frame(OP_TEXT, b"\xff\xfe")),
    ("message over max_line", 1009, lambda w: w.send_frame(OP_TEXT, b"x" * (1024 * 1024 + 1))),
    ("length 2^62", 1009, lambda w: w.send_raw(WebSocket.frame(OP_TEXT, b"abc", length=2 ** 62))),
    # Each frame under the limit, the message over it.
    ("fragmented message over max_line", 1009,
     lambda w: (w.send_frame(OP_TEXT, b"x" * 600000, fin=False),
                w.send_frame(OP_CONT, b"x" * 600000))),
    ("invalid UTF-8 in a continuation", 1007,
     lambda w: (w.send_frame(OP_TEXT, b"{", fin=False), w.send_frame(OP_CONT, b"\xc3\x28"))),
    # RFC 6455 5.5: control frames are not fragmented and carry <= 125 bytes.
    ("fragmented ping", 1002, lambda w: w.send_frame(OP_PING, b"x", fin=False)),
    ("ping over 125 bytes", 1002, lambda w: w.send_frame(OP_PING, b"x" * 126)),
    ("close with a 1-byte payload", 1002, lambda w: w.send_frame(OP_CLOSE, b"\x03")),
]
bad = []
for name, want, send in cases:
    w = conn()
    send(w)
    e = w.wait_closed(5)
    w.shutdown()
    if e.code != want:
        bad.append("%s: close %s, expected %s" % (name, e.code, want))
# A fragmented text message in order is fine, and pings are answered.
w = conn()
w.send_frame(OP_TEXT, b'{"type": "subscr', fin=False)
w.send_frame(OP_PING, b"mid")
w.send_frame(OP_CONT, b'ibe", "events": ["logs"]}')
import json
m = json.loads(w.recv_text(timeout=5))
assert m["type"] == "subscribed" and m["logs"], m
# A character cut between two frames, and a message after a big one (the
# buffer is reused): each arrives whole.
def reply():
    while True:  # (log events may come in between)
        m = json.loads(w.recv_text(timeout=5))
        if m["type"] in ("subscribed", "error"):
            return m
w.send_frame(OP_TEXT, b'{"type": "subscribe", "x": "\xc3', fin=False)
w.send_frame(OP_CONT, b'\xa9", "events": ["tasks"]}')
m = reply()
assert m["type"] == "subscribed" and m["tasks"], m
w.send_text('{"type": "subscribe", "pad": "%s", "events": ["agents"]}' % ("y" * 200000))
m = reply()
assert m["type"] == "subscribed" and m["agents"], m
w.send_text('{"type": "nonsense"}')
m = reply()
assert m["type"] == "error" and m["code"] == "bad_request", m
w.ping_wait(b"after")
assert w.pongs == [b"mid", b"after"], w.pongs
assert w.close(1000) == (1000, "")
if bad:
    sys.exit("; ".join(bad))
EOF
alive "malformed WebSocket frames"
ok "malformed WebSocket frames: close 1002/1003/1007/1009 as RFC 6455 says; fragments and pings work"

# ---- token expiry (an injected clock) -------------------------------------------------
expect 200 GET /v1/agents "$TCAP"
echo 7200 >"$T/clock"
expect 401 GET /v1/agents "$TCAP"
errmsg | grep -q "expired token" || fail "expired token: $(cat "$T/body")"
TCAP2=$(token "$KCAP")
expect 200 GET /v1/agents "$TCAP2"
echo 3500 >"$T/clock"
expect 200 GET /v1/agents "$TOPS"
echo 3601 >"$T/clock"
expect 401 GET /v1/agents "$TOPS"
echo 0 >"$T/clock"
expect 200 GET /v1/agents "$TOPS"
ok "token expiry: valid at +3500 s, 401 'expired token' at +3601 s and +7200 s; a new token works"

# ---- the remote agent ends cleanly ----------------------------------------------------
state_is rem1 ready || fail "rem1 not ready before the end: $(agent_state rem1)"
kill -TERM "$RPID"
wait_exit "$RPID" 5
[ "$RC" = 0 ] || fail "remote agent exit status $RC: $(tail -n 5 "$T/remote.err")"
until_ok 5 state_is rem1 stopped || fail "rem1 not stopped after it left: $(agent_state rem1)"
ok "the remote agent exits 0 on SIGTERM; rem1 becomes stopped"

expect 200 GET /metrics "$TOBS"
grep -q '^dreamos_bridge_auth_failures_total [1-9]' "$T/body" || fail "auth failures not counted"
grep -q '^dreamos_bridge_requests_total{code="4xx"} [1-9]' "$T/body" || fail "4xx not counted"
ok "metrics count authentication failures and 4xx answers"
stop_dreamos
ok "dreamos exits 0 on SIGTERM after all that"

# =========================================================================
# On a runtime of its own: a remote agent throttled by a full queue, killed
# =========================================================================
# slowr holds its messages (bus.window 8) until $T/release exists; the remote
# agent flood (tests/agents/busagent.py produce, on the SDK over the
# WebSocket) sends it 3,000.  Once bus.high_water (20) wait for slowr, dreamos
# stops reading flood's WebSocket; it lets it go after heartbeat_timeout
# (agents.heartbeat_timeout, 1.5 s here, is a remote agent's too) and holds it
# again at its next send.  flood is killed (kill -9) while held: its end can
# only be seen when dreamos reads from it again, so within a few seconds.
RT="$T/rtf"
BUSAGENT="$TOP/tests/agents/busagent.py"
BUS_PIDFILE="$T/fpids" # every busagent.py appends its pid
: >"$BUS_PIDFILE"
export BUS_PIDFILE
flood_cleanup() {
	_left=$(cat "$BUS_PIDFILE" 2>/dev/null)
	cleanup
	for p in $_left; do is_ours "$p" busagent && kill -KILL "$p" 2>/dev/null; done
}
trap flood_cleanup EXIT
cat >"$T/f.yaml" <<EOF
extensions:
  load: []
bus:
  window: 8
  high_water: 20
  ack_timeout: 60s
agents:
  heartbeat_timeout: 1.5s
  hello_timeout: 5s
  stop_grace: 2s
  list:
    - name: slowr
      command: $PY
      args: [-u, $BUSAGENT, record]
      env: {BUS_LOG: "$T/slowr.log", BUS_HOLD: "1", BUS_RELEASE: "$T/release"}
    - name: other
      command: $PY
      args: [-u, $BUSAGENT, record]
      env: {BUS_LOG: "$T/other.log"}
EOF
start_bridge "$T/f.yaml"
newkey flood agent
# fq NAME PYEXPR: prints PYEXPR over R, the records of busagent NAME's log.
fq() {
	"$PY" - "$T/$1.log" "$2" <<-'EOF'
	import json, sys
	R = []
	for line in open(sys.argv[1], "rb"):
	    try:
	        R.append(json.loads(line))
	    except ValueError:
	        pass
	print(eval(sys.argv[2]))
	EOF
}
# finfo PYEXPR: PYEXPR holds over `agent info flood --json` as j.
finfo() { ctl agent info flood --json 2>/dev/null | jtest "$1"; }
now_ms() { "$PY" -c 'import time; print(int(time.time() * 1000))'; }
: >"$T/flood.log"
DREAMOS_BRIDGE_URL="ws://127.0.0.1:$PORT" DREAMOS_API_KEY="$KEY" DREAMOS_HEARTBEAT_INTERVAL=0.3 \
	BUS_LOG="$T/flood.log" BUS_N=3000 BUS_TO=slowr "$PY" -u "$BUSAGENT" produce 2>"$T/flood.err" &
FPID=$!
PIDS="$PIDS $FPID"
until_ok 10 finfo "j['state'] == 'ready' and j.get('throttled_by') == 'slowr'" ||
	fail "flood not throttled by slowr: $(ctl agent info flood)"
# Killed as soon as a new `sent` arrives (it was let go, and held again at
# its next send): about a heartbeat_timeout before dreamos reads from it.
"$PY" - "$T/flood.log" "$FPID" >"$T/kill.out" <<'EOF' || fail "killing flood: $(cat "$T/kill.out")"
import os, signal, sys, time
def nsent():
    with open(sys.argv[1], "rb") as f:
        return f.read().count(b'"ev":"sent"')
n0, end = nsent(), time.monotonic() + 5
while nsent() == n0 and time.monotonic() < end:
    time.sleep(0.005)
os.kill(int(sys.argv[2]), signal.SIGKILL)
print(int(time.time() * 1000), n0, nsent())
EOF
ctl agent info flood --json >"$T/after-kill.json"
read -r KT N0 N1 <"$T/kill.out"
wait_exit "$FPID" 5
[ "$N1" -gt "$N0" ] || fail "flood was not let go after heartbeat_timeout ($N0 sent, none more in 5 s): $(ctl agent info flood)"
jtest "j['state'] == 'ready' and j.get('throttled_by') == 'slowr'" <"$T/after-kill.json" ||
	fail "flood not held when it was killed: $(cat "$T/after-kill.json")"
until_ok 6 finfo "j['state'] != 'ready'" || fail "flood's end not seen 6 s after the kill: $(ctl agent info flood)"
NOTICED=$(($(now_ms) - KT))
[ "$NOTICED" -le 5000 ] || fail "flood's end seen only $NOTICED ms after the kill (heartbeat_timeout 1.5 s)"
finfo "j['state'] == 'stopped' and j['last_exit'] == 'disconnected' and 'throttled_by' not in j" ||
	fail "flood after its end: $(ctl agent info flood)"
NSENT=$(fq flood "len([r for r in R if r.get('ev') == 'sent'])")
ok "a remote agent throttled by slowr (bus.high_water 20; let go after heartbeat_timeout: $N0 then $N1 sent), killed while held: stopped (disconnected) $NOTICED ms later, no longer held"

# dreamos goes on: status answers and another agent gets a message.
ctl status >/dev/null || fail "status after flood's end"
ctl send other "after the flood" --json >"$T/send.out" 2>&1 || fail "send to other: $(cat "$T/send.out")"
OID=$(json_get 'j["id"]' <"$T/send.out")
got_other() { fq other "any(r.get('ev') == 'msg' and r['id'] == $OID for r in R)" | grep -qx True; }
until_ok 5 got_other || fail "other did not get message $OID"
ok "dreamos goes on: status answers, other gets message $OID"

# Every message flood got `sent` for reaches slowr once it acks.
: >"$T/release"
fverify() { "$PY" "$BUSAGENT" verify "$T/flood.log" "$T/slowr.log"; }
until_ok 20 fverify || fail "not every message flood got sent for reached slowr: $(fverify)"
no_pending() { ctl status --json | jtest "j['counts']['messages_pending'] == 0"; }
until_ok 10 no_pending || fail "messages still pending: $(ctl status --json | json_get 'j["counts"]')"
ctl verify >"$T/verify.out" 2>&1 || fail "verify: $(cat "$T/verify.out")"
ok "released, slowr has every message flood got sent for ($NSENT): $(fverify); verify passes"

ctl quit >/dev/null || fail "quit"
wait_exit "$PID" 15
[ "$RC" = 0 ] || fail "quit exit status $RC"
left=""
while read -r p; do
	is_ours "$p" busagent && left="$left $p"
done <"$BUS_PIDFILE"
[ -z "$left" ] || fail "agent processes left after quit:$left"
ok "quit: exit 0, none of the $(wc -l <"$BUS_PIDFILE") agent processes (flood, slowr, other) left"
RT="$T/rt"

# =========================================================================
# On a runtime of its own: a big window to a remote agent whose writes block
# =========================================================================
# The Bridge stops reading a WebSocket while a MiB waits to be written to it
# (its peer is not reading), but not for the messages in flight to it: they
# wait for its acks.  A remote agent that writes each ack with a blocking
# write before it reads on would otherwise fill its socket with acks that are
# not read, block in that write, stop reading, and leave the queue full: each
# waiting for the other (before the fix: wide had 6,000 to 7,000 of the
# messages when heartbeat_timeout marked it unhealthy, and it stayed so, its
# close frame queued behind the rest).  wide is such an agent, on a raw socket
# (wsclient.py): for each message it sleeps 0.1 ms (a slow reader), records
# it and acks it with sendall() on a blocking socket, never reading while it
# writes.  Its socket buffers are made small (a pipe's are 64 KiB) so that its
# writes block soon, whatever the kernel's autotuning; it sends a heartbeat
# after 1 s without input and exits when the connection ends.  prodw
# (busagent.py produce, a child agent started once wide is there) sends it
# 20,000 messages as fast as it can, with a window of 20,000; each carries
# 1,000 bytes of padding (about 21 MB in all) so that more than a MiB stays
# queued while wide's acks fill the buffers (40 bytes each: a few thousand of
# them), however much the kernel holds of what is sent to it (up to
# net.ipv4.tcp_wmem's 4 MiB).  Within 90 s every message must arrive once
# (attempt 1) on wide's one connection and be acked; none may die.
#
# wide_run SUFFIX ACK_TIMEOUT MAX_ATTEMPTS DELAY: that run, on runtime
# rtwSUFFIX, wide sleeping DELAY seconds a message; with a SUFFIX, copies are
# allowed and at least one must have been sent.
wide_run() {
W=$1
RT="$T/rtw$W"
cat >"$T/w$W.yaml" <<EOF
extensions:
  load: []
bus:
  window: 20000
  high_water: 100000
  ack_timeout: $2
  max_attempts: $3
agents:
  heartbeat_timeout: 10s
  hello_timeout: 5s
  stop_grace: 2s
  list:
    - name: prodw
      command: $PY
      args: [-u, $BUSAGENT, produce]
      autostart: false
      env: {BUS_LOG: "$T/prodw$W.log", BUS_TO: wide, BUS_N: "20000", BUS_INFLIGHT: "2000", BUS_PAD: "1000"}
EOF
start_bridge "$T/w$W.yaml"
newkey wide agent
: >"$T/wide$W.log"
"$PY" - "$PORT" "$KEY" "$T/wide$W.log" "$4" <<'EOF' >"$T/wide$W.out" 2>"$T/wide$W.err" &
import json, os, socket, sys, time
from wsclient import Closed, connect_agent
port, key, path, delay = sys.argv[1:4] + [float(sys.argv[4])]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
def log(**rec):  # one write(2) a record: what was written stays, however it ends
    os.write(fd, (json.dumps(rec) + "\n").encode())
ws = connect_agent(port, key)
# (Before anything but the handshake went through: the kernel doubles them.)
ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
assert ws.sock.gettimeout() is None  # blocking: sendall() waits for room
ws.send_text(json.dumps({"type": "hello", "proto": 1, "name": "wide", "max_tasks": 0}))
while True:
    try:
        m = json.loads(ws.recv_text(timeout=1.0))
    except TimeoutError:
        ws.send_text('{"type": "heartbeat"}')
        continue
    except (Closed, OSError) as e:
        log(ev="closed", why=str(e))
        break
    if m["type"] == "welcome":
        log(ev="welcome", session=m.get("session"))
    elif m["type"] == "message":
        time.sleep(delay)
        # (as busagent.py records it, without the padding, for its verify)
        log(ev="msg", id=m["id"], attempt=m.get("attempt"), body={"seq": m["body"]["seq"]})
        try:
            ws.send_text(json.dumps({"type": "ack", "id": m["id"]}))
        except OSError as e:
            log(ev="closed", why="ack: %s" % e)
            break
ws.shutdown()
EOF
WPID=$!
PIDS="$PIDS $WPID"
until_ok 10 state_is wide ready || fail "remote agent wide not ready: $(cat "$T/wide$W.err")"
ctl agent restart prodw >/dev/null || fail "starting prodw"
# wq PYEXPR: prints PYEXPR over R, the records of wide's log, and M, its
# messages.
wq() {
	"$PY" - "$T/wide$W.log" "$1" <<-'EOF'
	import json, sys
	R = [json.loads(l) for l in open(sys.argv[1], "rb") if l.endswith(b"\n")]
	M = [r for r in R if r["ev"] == "msg"]
	print(eval(sys.argv[2]))
	EOF
}
# Until wide has them all or its connection ended, 60 s at most (by the
# clock: reading its log takes a while).
T0=$(date +%s)
until [ "$(wq "len(set(m['id'] for m in M)) == 20000 or R[-1]['ev'] == 'closed'" 2>/dev/null)" = True ] ||
	[ $(($(date +%s) - T0)) -ge 90 ]; do
	sleep 0.5
done
TOOK=$(($(date +%s) - T0))
WHAT="$(wq "len(M)") messages ($(wq "len(set(m['id'] for m in M))") distinct) in $TOOK s"
WINFO=$(ctl agent info wide --json | json_get "'state %s (%s), last_exit %s, session %s' % (j['state'], j['state_reason'], j['last_exit'], j['session'])")
wq "[r for r in R if r['ev'] != 'msg']" >"$T/wide$W.ev"
grep -q closed "$T/wide$W.ev" && fail "wide was disconnected after $WHAT: $(cat "$T/wide$W.ev"); wide: $WINFO"
[ "$(wq "len(set(m['id'] for m in M))")" = 20000 ] ||
	fail "wide did not get 20,000 messages within 90 s: $WHAT; wide: $WINFO"
if [ -z "$W" ]; then
	[ "$(wq "len(M) == 20000 and all(m['attempt'] == 1 for m in M)")" = True ] ||
		fail "wide got messages more than once: $WHAT, attempts $(wq "sorted(set(m['attempt'] for m in M))")"
else
	[ "$(wq "any(m['attempt'] > 1 for m in M)")" = True ] ||
		fail "no message was sent to wide twice: the case was not tested ($WHAT)"
fi
wverify() { "$PY" "$BUSAGENT" verify "$T/prodw$W.log" "$T/wide$W.log"; }
wverify >"$T/wverify$W.out" || fail "wide does not have every message prodw got sent for: $(cat "$T/wverify$W.out")"
grep -q "^sent 20000," "$T/wverify$W.out" || fail "prodw: $(cat "$T/wverify$W.out")"
until_ok 10 no_pending || fail "messages still pending: $(ctl status --json | json_get 'j["counts"]')"
ctl dead list --json | jtest "j == []" || fail "dead messages: $(ctl dead list | head -n 5)"
# One connection all along: one welcome, whose session dreamos still has.
[ "$(wq "len([r for r in R if r['ev'] == 'welcome'])")" = 1 ] || fail "wide connected again: $(cat "$T/wide$W.ev")"
WSESS=$(wq "[r['session'] for r in R if r['ev'] == 'welcome'][0]")
ctl agent info wide --json | jtest "j['state'] == 'ready' and j['session'] == '$WSESS' and j['last_exit'] is None" ||
	fail "wide after the run: $WINFO"
if [ -z "$W" ]; then
	ok "window 20,000 to a remote agent with blocking writes: all 20,000 (about 21 MB) arrived once (attempt 1) in $TOOK s on one connection and were acked, none died"
else
	ok "the same with an ack timeout of $2: $WHAT (copies of messages not yet acked, attempts up to $(wq "max(m['attempt'] for m in M)")) on one connection, all acked, none died"
fi

ctl quit >/dev/null || fail "quit"
wait_exit "$PID" 15
[ "$RC" = 0 ] || fail "quit exit status $RC"
wait_exit "$WPID" 5
[ "$RC" = 0 ] || fail "wide exit status $RC: $(tail -n 5 "$T/wide$W.err")"
grep -q closed "$T/wide$W.log" || fail "wide did not see its connection end"
left=""
while read -r p; do
	is_ours "$p" busagent && left="$left $p"
done <"$BUS_PIDFILE"
[ -z "$left" ] || fail "agent processes left after quit:$left"
ok "quit: exit 0; wide saw its connection end and exited 0; prodw is gone${W:+ (ack timeout $2)}"
}
wide_run "" 120s 5 0.0001
# The same with an ack timeout of 3 s: copies of messages not yet acked are
# queued again while the first ones still wait to be written; they are owed
# too (outq.h), so the agent must not get stuck (dreamos-protocol(7),
# Flooding).  Every message must arrive, on the one connection, none die.
# (wide sleeps 0.3 ms a message: 20,000 take 6 s at least, so that some
# wait longer than the 3 s however fast the machine.)
wide_run b 3s 1000 0.0003

# big_yaml HEARTBEAT_TIMEOUT PRODUCER TO N: a config whose agent PRODUCER
# (busagent.py produce, started by the test) sends TO N messages of 200 KB.
big_yaml() {
	cat <<-EOF
	extensions:
	  load: []
	agents:
	  heartbeat_timeout: $1
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	    - name: $2
	      command: $PY
	      args: [-u, $BUSAGENT, produce]
	      autostart: false
	      env: {BUS_LOG: "$T/$2.log", BUS_TO: $3, BUS_N: "$4", BUS_PAD: "200000"}
	EOF
}

# send_all NAME PRODUCER N: once the remote agent NAME is ready, starts
# PRODUCER and waits until it has its N messages sent.
send_all() {
	until_ok 10 state_is "$1" ready || fail "remote agent $1 not ready: $(cat "$T/$1.err")"
	ctl agent restart "$2" >/dev/null || fail "starting $2"
	until_ok 20 grep -q '"ev":"done"' "$T/$2.log" ||
		fail "$2 did not get its $3 messages sent: $(tail -n 3 "$T/$2.log")"
}

# slow_reader LOG: the remote agent slow (its key in $KEY) reads a message
# every 0.3 s and acks none; what it gets, whole or not, and its close go
# to LOG.  Sets SPID.
slow_reader() {
	: >"$1"
	"$PY" - "$PORT" "$KEY" "$1" <<-'EOF' >"$1.out" 2>"$1.err" &
	import json, os, socket, sys, time
	from wsclient import Closed, connect_agent
	port, key, path = sys.argv[1:4]
	fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
	def log(**rec):
	    os.write(fd, (json.dumps(rec) + "\n").encode())
	ws = connect_agent(port, key)
	ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
	ws.send_text(json.dumps({"type": "hello", "proto": 1, "name": "slow", "max_tasks": 0}))
	while True:
	    try:
	        m = json.loads(ws.recv_text(timeout=20))
	    except Closed as e:
	        log(ev="closed", code=e.code, reason=e.reason)
	        break
	    if m["type"] == "message":
	        log(ev="msg", id=m["id"], whole=len(m["body"]["pad"]) == 200000)
	        time.sleep(0.3)
	EOF
	SPID=$!
	PIDS="$PIDS $SPID"
}

# back_again NAME N: NAME (its key in $KEY) connects again, reads at full
# speed and acks until it has N distinct messages of 200 KB, each whole.
back_again() {
	"$PY" - "$PORT" "$KEY" "$1" "$2" <<-'EOF' >"$T/$1-back.out" 2>"$T/$1-back.err" &
	import json, sys
	from wsclient import connect_agent
	port, key, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
	ws = connect_agent(port, key)
	ws.send_text(json.dumps({"type": "hello", "proto": 1, "name": name, "max_tasks": 0}))
	got = set()
	while len(got) < n:
	    m = json.loads(ws.recv_text(timeout=20))
	    if m["type"] == "error":
	        sys.exit("error: %s" % m)
	    if m["type"] == "message" and len(m["body"]["pad"]) == 200000:
	        got.add(m["id"])
	        ws.send_text(json.dumps({"type": "ack", "id": m["id"]}))
	ws.shutdown()
	EOF
	_bpid=$!
	PIDS="$PIDS $_bpid"
	wait_exit "$_bpid" 30
	[ "$RC" = 0 ] || fail "$1, back, did not get its $2 messages: $(tail -n 3 "$T/$1-back.err")"
}

# =========================================================================
# On a runtime of its own: a remote agent that stops reading is let go
# =========================================================================
# mute says hello and then reads nothing more, sends nothing (no
# heartbeat).  prodm sends it 30 messages of 200 KB: more than the kernel's
# buffers and the Bridge's MiB hold, so our close frame, when its heartbeat
# timeout (2 s) ends it, waits behind them for good.  The 2 s for the close
# to end count from when it is queued, not sent: mute must be dropped
# (failed: unhealthy), so that the same agent can connect again and get its
# 30 messages (before: unhealthy for good, the connection held open).
RT="$T/rtm"
big_yaml 2s prodm mute 30 >"$T/m.yaml"
start_bridge "$T/m.yaml"
newkey mute agent
"$PY" - "$PORT" "$KEY" <<'EOF' >"$T/mute.out" 2>"$T/mute.err" &
import json, socket, sys, time
from wsclient import connect_agent
port, key = sys.argv[1:3]
ws = connect_agent(port, key)
ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
ws.send_text(json.dumps({"type": "hello", "proto": 1, "name": "mute", "max_tasks": 0}))
time.sleep(300)  # reads nothing more (the test kills it)
EOF
MPID=$!
PIDS="$PIDS $MPID"
send_all mute prodm 30
T0=$(date +%s)
until_ok 15 state_is mute failed ||
	fail "mute not dropped: $(ctl agent info mute --json | json_get "'%s (%s)' % (j['state'], j['state_reason'])")"
TOOK=$(($(date +%s) - T0))
ctl agent info mute --json | jtest "j['last_exit'] == 'unhealthy'" ||
	fail "mute: $(ctl agent info mute --json)"
# Back, reading this time: its 30 messages, each whole.
back_again mute 30
until_ok 10 no_pending || fail "messages still pending: $(ctl status --json | json_get 'j["counts"]')"
ok "a remote agent that stopped reading with 6 MB queued to it: dropped $TOOK s after its messages were sent (heartbeat timeout 2 s, then 2 s for its close); back, it got all 30"
kill "$MPID" 2>/dev/null
ctl quit >/dev/null || fail "quit"
wait_exit "$PID" 15
[ "$RC" = 0 ] || fail "quit exit status $RC"

# The other side of that rule: slow reads but reads (about 0.7 MB/s, 200
# KB at a time), and is stopped with most of prods's 40 messages of 200 KB
# queued to it: more than the kernel's buffers (up to 4 MiB) and 2 s of its
# reading hold.  The 2 s start again while it reads what waits ahead of our
# close frame (30 s at most): it must get what was written ahead of that
# frame, each message whole, and then our close, 1000 (before: cut off 2 s
# after the stop, with no close frame, 1006).  (The close goes ahead of the
# messages not yet written: wslay sends control frames first.)  It acks
# nothing: back, reading at full speed, it must get all 40.
RT="$T/rts"
big_yaml 10s prods slow 40 >"$T/s.yaml"
start_bridge "$T/s.yaml"
newkey slow agent
slow_reader "$T/slow.log"
send_all slow prods 40
BEFORE=$(grep -c '"ev": "msg"' "$T/slow.log")
[ "$BEFORE" -le 15 ] || fail "slow already had $BEFORE of the 40 messages when prods was done: no slow drain to test"
T0=$(date +%s)
ctl agent stop slow >/dev/null || fail "agent stop slow"
wait_exit "$SPID" 40
TOOK=$(($(date +%s) - T0))
[ "$RC" = 0 ] || fail "slow exit status $RC: $(tail -n 3 "$T/slow.log.err")"
GOT=$(grep -c '"ev": "msg"' "$T/slow.log")
WHOLE=$(grep -c '"ev": "msg", "id": [0-9]*, "whole": true' "$T/slow.log")
CLOSE=$(grep '"ev": "closed"' "$T/slow.log")
[ "$WHOLE" = "$GOT" ] && [ "$GOT" -gt "$((BEFORE + 5))" ] && echo "$CLOSE" | grep -q '"code": 1000' ||
	fail "slow, stopped with $((40 - BEFORE)) messages queued, got $GOT messages ($WHOLE whole) and then $CLOSE ($TOOK s)"
back_again slow 40
until_ok 10 no_pending || fail "messages still pending: $(ctl status --json | json_get 'j["counts"]')"
ok "a remote agent that reads slowly, stopped with $((40 - BEFORE)) messages of 200 KB queued to it: it read $((GOT - BEFORE)) more, each whole, and then our close, 1000, $TOOK s after the stop; back, it got all 40"
# Not so for a close that is owed nothing: slow's key revoked with prods's
# next 40 messages (8 MB) queued to it, its connection ends 2 s after the
# revocation, not once it has read what it can (about 10 s, as above; what
# the socket already held still reaches it).
slow_reader "$T/slow3.log"
: >"$T/prods.log"
send_all slow prods 40
T0=$(date +%s)
ctl apikey revoke "$KEYID" >/dev/null || fail "apikey revoke"
slow_gone() { ! state_is slow ready; }
until_ok 15 slow_gone ||
	fail "slow's connection still open 15 s after its key was revoked: $(ctl agent info slow --json | json_get "j['state']")"
TOOK=$(($(date +%s) - T0))
[ "$TOOK" -le 5 ] || fail "slow's connection ended $TOOK s after its key was revoked, not 2"
wait_exit "$SPID" 30
ok "the same agent, its key revoked with 40 messages of 200 KB queued: its connection ended $TOOK s later ($(grep -c '"ev": "msg"' "$T/slow3.log") of them had reached it)"
ctl audit verify --json >"$T/verify.json" || fail "audit verify: $(cat "$T/verify.json")"
json_get '"audit chain intact: %d rows verified" % j["rows"] == j["message"] and j["rows"] > 10' <"$T/verify.json" |
	grep -q True || fail "audit verify --json: $(cat "$T/verify.json")"
ok "audit verify --json: the chain intact, with its row count"
ctl quit >/dev/null || fail "quit"
wait_exit "$PID" 15
[ "$RC" = 0 ] || fail "quit exit status $RC"
RT="$T/rt"

# =========================================================================
# An edited audit row is found.  Run 2: rate limit and connection flood.
# =========================================================================
"$PY" - "$RT/dreamos.db" >"$T/tamper" <<'EOF' || fail "editing the audit table"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rid, detail = db.execute("SELECT id, detail FROM audit ORDER BY id LIMIT 1 OFFSET 4").fetchone()
db.execute("UPDATE audit SET detail = ? WHERE id = ?", (detail + " (edited)", rid))
db.commit()
print(rid)
print(detail)
EOF
EDITED=$(sed -n 1p "$T/tamper")
cat >"$T/b.yaml" <<EOF
bridge:
  max_connections: 20
security:
  rate_limit: 6
EOF
start_bridge "$T/b.yaml"
ctl audit verify >"$T/verify.out" 2>&1
rc=$?
[ $rc = 1 ] || fail "audit verify after an edit: exit $rc: $(cat "$T/verify.out")"
grep -q "row $EDITED was edited" "$T/verify.out" || fail "audit verify does not name row $EDITED: $(cat "$T/verify.out")"
ok "audit verify exits 1 naming the edited row $EDITED"

# ---- rate limit -------------------------------------------------------------------------
newkey rl operator
TRL=$(token "$KEY")
newkey other observer
TOTHER=$(token "$KEY")
for i in 1 2 3 4 5 6; do expect 200 GET /v1/agents "$TRL"; done
expect 429 GET /v1/agents "$TRL"
[ "$(errcode)" = rate_limited ] || fail "429 code"
ra=$(header Retry-After)
[ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le 10 ] || fail "Retry-After: '$ra'"
expect 429 POST /v1/messages "$TRL" -H "$JSON" --data-binary '{"to": "*", "body": 1}'
expect 200 GET /v1/agents "$TOTHER"
expect 200 GET /healthz ""
ctl bridge status --json | json_get 'j["rate_limited"] >= 2' | grep -q True || fail "rate_limited count"
ok "rate limit: the 7th request of a minute gets 429 + Retry-After ($ra s); other keys unaffected"

# ---- failed authentications: 20 a minute from one address, then 429 unaudited ---------
nfail() {
	ctl audit --json --limit 100000 |
		json_get "len([a for a in j if a['action'] in ('auth', 'auth.token') and not a['ok']])"
}
N0=$(nfail)
for i in 1 2 3 4 5 6 7 8 9 10; do
	expect 401 GET /v1/agents "dost_forged$i"
	expect 401 POST /v1/auth/token "dos_nokey$i"
done
# The bucket refills one every 3 s: allow for a slow machine.
i=0
until [ "$(st GET /v1/agents dost_forged)" = 429 ]; do
	i=$((i + 1))
	[ $i -lt 3 ] || fail "no 429 after 20 failed authentications: $(cat "$T/body")"
done
[ "$(errcode)" = too_many_failures ] || fail "429 code: $(cat "$T/body")"
ra=$(header Retry-After)
[ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le 3 ] || fail "Retry-After: '$ra'"
expect 429 POST /v1/auth/token "dos_nokey"
expect 429 GET /v1/agents "" -H "Origin: https://evil.example"
expect 200 GET /v1/agents "$TOTHER"
N1=$(nfail)
[ $((N1 - N0)) -eq $((20 + i)) ] || fail "failed authentications audited: $((N1 - N0)), expected $((20 + i))"
ctl bridge status --json | json_get 'j["auth_throttled"] >= 3' | grep -q True || fail "auth_throttled count: $(ctl bridge status)"
expect 200 GET /metrics "$TOTHER"
grep -q "^dreamos_bridge_auth_throttled_total [1-9]" "$T/body" || fail "metrics: no dreamos_bridge_auth_throttled_total"
ok "failed authentications: 20 a minute from one address, then 429 + Retry-After ($ra s), not audited, counted; valid tokens unaffected"

# ---- 1,000 connections beyond max_connections -------------------------------------------
"$PY" - "$PORT" "$TOTHER" <<'EOF' >"$T/flood.out" 2>&1 || fail "connection flood: $(cat "$T/flood.out")"
import json, resource, select, socket, sys, time, urllib.request, urllib.error
from wsclient import WebSocket
port, tok = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < 1400:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2048), hard))
# max_connections is 20: an observer WebSocket and 19 idle connections hold them
obs = WebSocket.connect("ws://127.0.0.1:%d/v1/stream" % port,
                        headers={"Authorization": "Bearer " + tok})
obs.send_text('{"type": "subscribe", "events": ["tasks"]}')
assert json.loads(obs.recv_text(timeout=5))["type"] == "subscribed"
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(19)]
time.sleep(0.2)
# 1,000 more, at most 100 waiting at a time (the kernel's listen queue is small)
res, pending, started = {}, {}, 0
poll = select.poll()
deadline = time.monotonic() + 30
while (started < 1000 or pending) and time.monotonic() < deadline:
    while started < 1000 and len(pending) < 100:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        pending[s.fileno()] = [s, b""]
        poll.register(s.fileno(), select.POLLIN)
        started += 1
    for fd, _ in poll.poll(1000):
        s, buf = pending[fd]
        try:
            d = s.recv(4096)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            d = None
        if d:
            pending[fd][1] += d
            continue
        k = "reset" if d is None else (buf.split(b"\r\n", 1)[0].decode() if buf else "closed")
        if buf and not k.startswith("HTTP/1.1 503"):
            k = "other: " + buf[:200].decode("utf-8", "replace")
        res[k] = res.get(k, 0) + 1
        poll.unregister(fd)
        s.close()
        del pending[fd]
n503 = res.get("HTTP/1.1 503 Service Unavailable", 0)
others = {k: v for k, v in res.items() if not k.startswith("HTTP/1.1 503") and k not in ("closed", "reset")}
assert not pending and not others, (res, len(pending))
assert n503 + res.get("closed", 0) + res.get("reset", 0) == 1000, res
assert n503 >= 900, res
# the connections held are unaffected: the slots free, a request works and
# the observer sees the task it creates
for s in held:
    s.close()
time.sleep(0.3)
req = urllib.request.Request("http://127.0.0.1:%d/v1/agents" % port,
                             headers={"Authorization": "Bearer " + tok})
assert urllib.request.urlopen(req, timeout=5).status == 200
obs.ping_wait(b"still there")
assert obs.close() is not None
print("%d of 1000" % n503)
EOF
alive "1,000 connections"
ctl bridge status --json | json_get 'j["connections"] <= 2' | grep -q True ||
	fail "connections left open: $(ctl bridge status)"
ok "1,000 connections beyond max_connections (20): 503 for $(cat "$T/flood.out"), the rest closed; the held WebSocket and new requests work"
stop_dreamos

# =========================================================================
# A deleted newest audit row is found.  Run 3: TLS.
# =========================================================================
"$PY" - "$RT/dreamos.db" "$EDITED" "$(sed -n 2p "$T/tamper")" >"$T/deleted" <<'EOF' || fail "deleting the newest audit row"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE audit SET detail = ? WHERE id = ?", (sys.argv[3], int(sys.argv[2])))
rid = db.execute("SELECT max(id) FROM audit").fetchone()[0]
db.execute("DELETE FROM audit WHERE id = ?", (rid,))
db.commit()
print(rid)
EOF
DELETED=$(cat "$T/deleted")
if ! command -v openssl >/dev/null 2>&1; then
	start_bridge "$T/b.yaml"
	ctl audit verify >"$T/verify.out" 2>&1
	[ $? = 1 ] || fail "audit verify after deleting the newest row: $(cat "$T/verify.out")"
	ok "audit verify exits 1 after the newest row was deleted"
	echo "ok - TLS # SKIP openssl not found"
	stop_dreamos
	exit 0
fi
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	-keyout "$T/key.pem" -out "$T/cert.pem" >"$T/openssl.out" 2>&1 || fail "openssl: $(cat "$T/openssl.out")"
cat >"$T/c.yaml" <<EOF
bridge:
  tls:
    cert: $T/cert.pem
    key: $T/key.pem
EOF
SCHEME=https
CURLTLS="--cacert $T/cert.pem"
start_bridge "$T/c.yaml"
ctl audit verify >"$T/verify.out" 2>&1
rc=$?
[ $rc = 1 ] || fail "audit verify after deleting the newest row: exit $rc: $(cat "$T/verify.out")"
grep -q "deleted" "$T/verify.out" || fail "audit verify: $(cat "$T/verify.out")"
grep -q "row $DELETED" "$T/verify.out" || fail "audit verify does not name the deleted row $DELETED: $(cat "$T/verify.out")"
ok "audit verify exits 1 after the newest row ($DELETED) was deleted"

ctl status --json | json_get 'j["bridge"]["tls"]' | grep -q True || fail "status: tls"
expect 200 GET /healthz ""
expect 200 POST /v1/auth/token "$KOPS"
TOPS=$(json_get 'j["token"]' <"$T/body")
expect 200 GET /v1/agents "$TOPS"
[ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/healthz")" = 000 ] ||
	fail "an unknown certificate was accepted"
[ "$(curl -s -k --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/healthz")" = 200 ] ||
	fail "curl -k"
code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")
[ "$code" != 200 ] || fail "plain HTTP answered on the TLS port"
code=$(curl -s $CURLTLS --tls-max 1.1 --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/healthz")
[ "$code" = 000 ] || fail "TLS 1.1 accepted ($code)"
ok "TLS (self-signed, --cacert): healthz, tokens, endpoints; unknown CA, plain HTTP and TLS 1.1 refused"

# The remote agent over wss://, and an observer with wsclient.
: >"$T/remote.log"
DREAMOS_BRIDGE_URL="wss://127.0.0.1:$PORT" DREAMOS_API_KEY="$KREM1" DREAMOS_BRIDGE_CAFILE="$T/cert.pem" \
	REMOTE_LOG="$T/remote.log" "$PY" "$TOP/tests/agents/remote_agent.py" 2>"$T/remote.err" &
RPID=$!
PIDS="$PIDS $RPID"
until_ok 10 state_is rem1 ready || fail "remote agent over wss not ready: $(cat "$T/remote.err")"
expect 201 POST /v1/messages "$TOPS" -H "$JSON" --data-binary '{"to": "rem1", "body": {"over": "tls"}}'
MSG3=$(json_get 'j["id"]' <"$T/body")
until_ok 5 acked "$MSG3" || fail "message over TLS not acked: $(cat "$T/remote.log")"
"$PY" "$TOP/tests/helpers/wsclient.py" --cacert "$T/cert.pem" -H "Authorization: Bearer $TOPS" \
	--send '{"type": "subscribe", "events": ["agents"]}' --ping --recv 1 --timeout 5 \
	"wss://127.0.0.1:$PORT/v1/stream" >"$T/wss.out" 2>&1 || fail "wsclient over wss: $(cat "$T/wss.out")"
grep -q '"type":"subscribed"' "$T/wss.out" && grep -q '^pong wsclient' "$T/wss.out" || fail "wss: $(cat "$T/wss.out")"
kill -TERM "$RPID"
wait_exit "$RPID" 5
[ "$RC" = 0 ] || fail "remote agent over TLS exit status $RC"
ok "over wss://: the remote agent gets and acks a message; wsclient subscribes and pings"
alive "TLS"
stop_dreamos
