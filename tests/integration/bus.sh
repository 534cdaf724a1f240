#!/bin/sh
# bus.sh — the UnifiedMessageSystem end to end, with tests/agents/busagent.py
# as the agents: direct sends, the inbox of a stopped agent, priority order
# and FIFO within a priority, the delivery window, redelivery after a
# restart of the recipient, broadcast and topic fan-out (from the captain and
# from an agent), every documented error code of send/ack/subscribe (with
# the sender's ref, nothing stored, the connection kept), history filters,
# history and inboxes across an orchestrator restart; then, with a short
# ack timeout: redelivery with attempt 1, 2, 3, dead letters, requeue.
. "${top_srcdir:-.}/tests/integration/lib.sh"

PY=${PYTHON3:-python3}
PYBIN=$(command -v "$PY") || fail "no $PY"
BUSAGENT=$(cd "${top_srcdir:-.}/tests/agents" && pwd)/busagent.py
[ -f "$BUSAGENT" ] || fail "no $BUSAGENT"
if [ -z "${DREAMOS_SHARE:-}" ]; then
	DREAMOS_SHARE=$(cd "${top_srcdir:-.}/share" && pwd)
fi
# Every agent (config or spawned) inherits these through dreamos.
BUS_PIDFILE="$T/pids"
export BUS_PIDFILE DREAMOS_SHARE
L="$T/blog"
mkdir -p "$L"
: >"$BUS_PIDFILE"

# Whatever happens, no agent outlives the test.
bus_cleanup() {
	leftover=$(cat "$BUS_PIDFILE" 2>/dev/null)
	cleanup
	for p in $leftover; do is_ours "$p" busagent && kill -KILL "$p" 2>/dev/null; done
}
trap bus_cleanup EXIT

# jtest PYEXPR: reads JSON on stdin; succeeds if PYEXPR (over j) is true.

# lq NAME PYEXPR / lt NAME PYEXPR: evaluates PYEXPR over the log of agent
# NAME — R: all its records, M: the messages it received (in order), E: the
# error replies it got — and prints the value (lq) or succeeds if it is true
# (lt).
lq() { bus_logeval print "$@"; }
lt() { bus_logeval test "$@"; }
bus_logeval() {
	"$PY" - "$1" "$L/$2.log" "$3" <<-'EOF'
	import json, sys
	R = []
	try:
	    for line in open(sys.argv[2], "rb"):
	        try:
	            R.append(json.loads(line))
	        except ValueError:
	            pass
	except OSError:
	    pass
	M = [r for r in R if r.get("ev") == "msg"]
	E = [r for r in R if r.get("ev") == "error"]
	v = eval(sys.argv[3])
	if sys.argv[1] == "test":
	    sys.exit(0 if v else 1)
	print(v if isinstance(v, str) else json.dumps(v))
	EOF
}

# quit_ok [WHAT]: quits dreamos, which must exit 0.
quit_ok() {
	ctl quit >/dev/null || fail "quit${1:+ ($1)}"
	wait_exit "$PID" 15
	[ "$RC" = 0 ] || fail "quit exit status $RC${1:+ ($1)}"
}
# no_agent_left [WHAT]: no agent process this test caused is alive.
no_agent_left() {
	left=""
	for p in $(cat "$BUS_PIDFILE"); do alive "$p" && is_ours "$p" busagent && left="$left $p"; done
	[ -z "$left" ] || fail "agent processes left after quit${1:+ ($1)}:$left"
}
# core_yaml: the start of a config for the core alone (no Bridge, no
# extensions, so no extensions' agents as recipients).
core_yaml() { printf 'bridge:\n  enabled: false\nextensions:\n  load: []\n'; }

# ht PYEXPR ARGS...: PYEXPR holds over `history ARGS --json` as j.
ht() {
	ht_e=$1
	shift
	ctl history --json "$@" 2>/dev/null | jtest "$ht_e"
}

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

# dead_is PYEXPR: PYEXPR holds over `dead list --json` as j.
dead_is() { ctl dead list --json 2>/dev/null | jtest "$1"; }

agent_is() { ctl agent info "$1" --json 2>/dev/null | jtest "$2"; }
wait_state() {
	wait_for "${3:-10}" "$1 $2 ($(ctl agent info "$1" 2>&1 | grep '^state'))" \
		agent_is "$1" "j['state'] == '$2'"
}
field() { ctl agent info "$1" --json | json_get "j['$2']"; }

# sendid ARGS...: `ctl send ARGS --json`, prints the new message's id.
sendid() {
	ctl send "$@" --json >"$T/sendid.out" 2>&1 || fail "send $*: $(cat "$T/sendid.out")"
	json_get 'j["id"]' <"$T/sendid.out"
}

# hist_ids: the ids in history (up to 1000), for failure messages.
hist_ids() { ctl history --json --limit 1000 | json_get "[r['id'] for r in j]"; }

# deliv ID: the deliveries column of message ID in history.
deliv() {
	ctl history --json --limit 100000 | json_get "[r['deliveries'] for r in j if r['id'] == $1][0]"
}
# delivered_as ID TEXT: message ID's deliveries read exactly TEXT.
delivered_as() { [ "$(deliv "$1" 2>/dev/null)" = "$2" ]; }
# wait_delivered ID TEXT: until message ID's deliveries read TEXT (5 s).
wait_delivered() {
	wd_end=$(($(date +%s) + 5))
	until delivered_as "$1" "$2"; do
		[ "$(date +%s)" -le "$wd_end" ] ||
			fail "timed out waiting for message $1 delivered as '$2': $(deliv "$1")"
		sleep 0.05
	done
}

# counts_quiet PYEXPR: like counts_check, without failing (for wait_for).
counts_quiet() { ctl status --json 2>/dev/null | jtest "(lambda c: $1)(j['counts'])"; }
# counts_check PYEXPR: PYEXPR holds over the counts of `status --json` as c.
counts_check() {
	ctl status --json | jtest "(lambda c: $1)(j['counts'])" ||
		fail "status counts: want $1, got $(ctl status --json | json_get 'j["counts"]')"
}

agentdef() { # NAME MODE [ENV...]: one agents.list entry
	ad_name=$1 ad_mode=$2
	shift 2
	printf '    - name: %s\n      command: %s\n      args: [-u, %s, %s]\n' \
		"$ad_name" "$PYBIN" "$BUSAGENT" "$ad_mode"
	printf '      env: {BUS_LOG: "%s/%s.log"' "$L" "$ad_name"
	for e in "$@"; do printf ', %s' "$e"; done
	printf '}\n'
}

{
	core_yaml
	cat <<-EOF
	bus:
	  ack_timeout: 30s
	  max_attempts: 3
	  window: 4
	  max_body: 1KiB
	agents:
	  restart: on-failure
	  backoff: {initial: 0.1s, cap: 1s}
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef rec record 'BUS_TOPICS: news' 'BUS_ACK_TWICE: "1"'
	agentdef other record 'BUS_TOPICS: builds/main'
	agentdef prio record
	echo "      autostart: false"
	agentdef holder record 'BUS_HOLD: "1"' "BUS_RELEASE: \"$T/release\""
} >"$T/bus.yaml"

start_headless --config "$T/bus.yaml"
for a in rec other holder; do wait_state $a ready; done
agent_is prio "j['state'] == 'stopped'" || fail "prio (autostart: false) is not stopped"
wait_for 5 "rec subscribed" lt rec "any(r['ev'] == 'welcome' for r in R)"
ok "dreamos with agents rec, other, holder ready, prio stopped"

# ---- a direct message ----------------------------------------------------

ID_HELLO=$(sendid rec hello rec)
wait_for 5 "rec got message $ID_HELLO" lt rec "any(m['id'] == $ID_HELLO for m in M)"
lt rec "[(m['from'], m['to'], m['body'], m['priority'], m['mode'], m['attempt']) for m in M if m['id'] == $ID_HELLO] == [('captain', 'rec', 'hello rec', 'normal', 'NORMAL', 1)]" ||
	fail "message as received: $(lq rec M)"
wait_delivered "$ID_HELLO" "rec:acked"
ID_JSON=$(sendid rec --body '{"k": [1, 2.5, null], "s": "\u00e9t\u00e9"}' --priority HIGH --mode sync)
wait_for 5 "rec got message $ID_JSON" lt rec "any(m['id'] == $ID_JSON for m in M)"
lt rec "[(m['body'], m['priority'], m['mode']) for m in M if m['id'] == $ID_JSON] == [({'k': [1, 2.5, None], 's': '\\u00e9t\\u00e9'}, 'high', 'SYNC')]" ||
	fail "JSON body / priority / mode in any case: $(lq rec "[m for m in M if m['id'] == $ID_JSON]")"
[ "$ID_JSON" -gt "$ID_HELLO" ] || fail "ids must increase: $ID_HELLO then $ID_JSON"
ok "send: message $ID_HELLO delivered (attempt 1) and acked; a JSON body as is; HIGH/sync → high/SYNC"

# ---- inbox of a stopped agent, priority order, FIFO within a priority ------

# prio has not run yet (autostart: false): its messages wait in its inbox.
for m in low:L1 normal:N1 urgent:U1 high:H1 low:L2 normal:N2 urgent:U2 high:H2 normal:N3 low:L3 \
	urgent:U3 high:H3; do
	sendid prio "${m#*:}" --priority "${m%%:*}" >/dev/null
done
[ ! -s "$L/prio.log" ] || fail "prio has a log before it ran"
ht "len(j) == 12 and all(r['deliveries'] == 'prio:pending' for r in j)" prio ||
	fail "12 pending messages for prio wanted: $(ctl history prio)"
counts_check "c['messages_pending'] >= 12"
ok "inbox: 12 messages wait (pending) for prio, which is not running"

ctl agent restart prio >/dev/null || fail "agent restart prio"
wait_for 10 "prio got 12 messages" lt prio "len(M) >= 12"
order=$(lq prio "' '.join(m['body'] for m in M)")
[ "$order" = "U1 U2 U3 H1 H2 H3 N1 N2 N3 L1 L2 L3" ] ||
	fail "priority order: got '$order'"
lt prio "all(m['attempt'] == 1 for m in M)" || fail "first delivery must be attempt 1: $(lq prio M)"
wait_for 5 "prio acked all" ht "len(j) == 12 and all(r['deliveries'] == 'prio:acked' for r in j)" prio
ok "priority order after start: $order"

# The same with an agent stopped by the captain.
ctl agent stop prio >/dev/null || fail "agent stop prio"
wait_state prio stopped
for m in normal:A low:B urgent:C normal:D high:E urgent:F low:G; do
	sendid prio "${m#*:}" --priority "${m%%:*}" >/dev/null
done
ctl agent restart prio >/dev/null || fail "agent restart prio (2)"
wait_for 10 "prio got 7 more messages" lt prio "len(M) >= 19"
order=$(lq prio "' '.join(m['body'] for m in M[12:])")
[ "$order" = "C F E A D B G" ] || fail "priority order after agent stop: got '$order'"
wait_for 5 "prio acked all" ht "len(j) == 19 and all(r['deliveries'] == 'prio:acked' for r in j)" prio
lt prio "len(M) == 19 and len(set(m['id'] for m in M)) == 19" ||
	fail "acked messages came again: $(lq prio "[m['id'] for m in M]")"
ok "agent stop / restart: 7 messages waited, then came as $order (acked ones not again)"

# ---- the delivery window (bus.window 4) ----------------------------------

W=""
# holder does not ack until $T/release exists: w1..w4 fill its window, and
# w5 (low), w6 (normal), w7 (urgent) wait; the acks let them out by priority.
for i in 1 2 3 4; do W="$W $(sendid holder "w$i")"; done
W="$W $(sendid holder w5 --priority low) $(sendid holder w6) $(sendid holder w7 --priority urgent)"
set -- $W
W1=$1 W4=$4
wait_for 5 "holder got 4 messages" lt holder "len(set(m['id'] for m in M)) >= 4"
sleep 0.3
lt holder "sorted(set(m['id'] for m in M)) == list(range($W1, $W4 + 1))" ||
	fail "window 4: holder got $(lq holder "[m['id'] for m in M]"), want $W1..$W4 only"
ht "[r['deliveries'] for r in j] == ['holder:pending'] * 7" holder ||
	fail "7 pending for holder: $(ctl history holder)"
counts_check "c['messages_inflight'] == 4"
: >"$T/release"
wait_for 10 "holder got all 7" lt holder "len(set(m['id'] for m in M)) == 7"
wait_for 5 "holder acked all 7" ht "[r['deliveries'] for r in j] == ['holder:acked'] * 7" holder
order=$(lq holder "' '.join(m['body'] for m in M)")
[ "$order" = "w1 w2 w3 w4 w7 w6 w5" ] || fail "window: order $order, want w1 w2 w3 w4 w7 w6 w5"
lt holder "all(m['attempt'] == 1 for m in M)" || fail "window: attempts: $(lq holder M)"
ok "window: 4 of 7 in flight until acks, then the rest by priority ($order), each once"

# ---- redelivery after a restart of the recipient -------------------------

rm -f "$T/release"
R1=$(sendid holder r1)
R2=$(sendid holder r2)
wait_for 5 "holder holds r1, r2" lt holder "{m['body'] for m in M} >= {'r1', 'r2'}"
P1=$(field holder pid)
lt holder "[(m['body'], m['attempt'], m['pid']) for m in M if m['body'] in ('r1', 'r2')] == [('r1', 1, $P1), ('r2', 1, $P1)]" ||
	fail "holder first deliveries: $(lq holder M)"
ctl agent restart holder >/dev/null || fail "agent restart holder"
wait_for 10 "r1, r2 again after the restart" lt holder "len([m for m in M if m['body'] in ('r1', 'r2') and m['pid'] != $P1]) >= 2"
lt holder "[(m['id'], m['attempt']) for m in M if m['body'] in ('r1', 'r2') and m['pid'] != $P1] == [($R1, 2), ($R2, 2)]" ||
	fail "redelivery after restart: $(lq holder "[m for m in M if m['body'] in ('r1', 'r2')]")"
: >"$T/release"
wait_for 5 "r1, r2 acked" ht "[r['deliveries'] for r in j][-2:] == ['holder:acked'] * 2" holder
ok "restart of the recipient: unacked $R1, $R2 come back in order with attempt 2, then acked"

# ---- broadcast and topics from the captain --------------------------------

ctl broadcast hear ye --json >"$T/bc.out" || fail "broadcast: $(cat "$T/bc.out")"
BC=$(json_get 'j["id"]' <"$T/bc.out")
json_get 'j["recipients"]' <"$T/bc.out" | grep -qx 4 || fail "broadcast recipients: $(cat "$T/bc.out")"
for a in rec other prio holder; do
	wait_for 5 "$a got broadcast $BC" lt $a "any(m['id'] == $BC and m['to'] == '*' and m['body'] == 'hear ye' for m in M)"
done
wait_delivered "$BC" "holder:acked other:acked prio:acked rec:acked"
ok "broadcast $BC reached rec, other, prio, holder"

TN=$(ctl publish news extra --json | json_get 'j["id"]')
TB=$(ctl publish '#builds/main' green --json | json_get 'j["id"]')
wait_for 5 "rec got #news" lt rec "any(m['id'] == $TN and m['to'] == '#news' for m in M)"
wait_for 5 "other got #builds/main" lt other "any(m['id'] == $TB and m['to'] == '#builds/main' for m in M)"
wait_delivered "$TN" "rec:acked"
delivered_as "$TB" "other:acked" || fail "#builds/main deliveries: $(deliv "$TB")"
for a in rec other prio holder; do
	lt $a "not any(m['id'] in ($TN, $TB) and m['to'] != {'rec': '#news', 'other': '#builds/main'}.get('$a') for m in M)" ||
		fail "$a got a topic message it is not subscribed to: $(lq $a M)"
done
ctl publish nobody-listens hello --json | jtest "j['recipients'] == 0" || fail "publish without subscribers"
ctl publish 'bad topic!' x >/dev/null 2>"$T/pub.err"
rc=$?
[ $rc -eq 2 ] || fail "publish to a bad topic: exit $rc, want 2"
grep -q "not a valid topic" "$T/pub.err" || fail "bad topic message: $(cat "$T/pub.err")"
ok "topics: #news to rec only, #builds/main to other only, none listening → 0 recipients, bad topic refused"

ctl send nobody hi >/dev/null 2>"$T/nobody.err" && fail "send to an unknown agent must fail"
grep -q "no agent named 'nobody'" "$T/nobody.err" || fail "unknown agent message: $(cat "$T/nobody.err")"
ctl send rec x --priority extreme >/dev/null 2>&1
[ $? -eq 2 ] || fail "send --priority extreme must be a usage error"
ctl send rec x --mode dance >/dev/null 2>&1
[ $? -eq 2 ] || fail "send --mode dance must be a usage error"
ok "captain: unknown agent, bad priority, bad mode refused"

# ---- an agent speaking: sends, fan-out, and every error code ----------------

XS=$(printf '%1017s' '' | tr ' ' x)
cat >"$T/s1.script" <<EOF
{"type":"subscribe","topic":"#alerts","ref":"sub1"}
{"type":"send","to":"rec","body":{"from":"s1"},"priority":"URGENT","mode":"integrate","reply_to":$ID_HELLO,"ref":"d1"}
{"type":"send","to":"*","body":"s1 to all","ref":"b1"}
{"type":"send","to":"#news","body":"s1 news","ref":"t1"}
{"type":"send","to":"captain","body":"s1 to captain","ref":"c1"}
{"type":"send","to":"nobody","body":"REJECT unknown","ref":"e1"}
{"type":"send","to":"rec","body":"REJECT$XS","ref":"e2"}
{"type":"send","to":"rec","body":"okbig$XS","ref":"ok2"}
{"type":"send","to":"rec","body":"REJECT prio","priority":"highest","ref":"e3"}
{"type":"send","to":"rec","body":"REJECT mode","mode":"DANCE","ref":"e4"}
{"type":"send","to":"s1","body":"REJECT self","ref":"e5"}
{"type":"send","to":"#bad topic","body":"REJECT topic","ref":"e6"}
{"type":"subscribe","topic":"bad topic","ref":"e7"}
{"type":"unsubscribe","topic":"","ref":"e8"}
{"type":"ack","id":99999999,"ref":"e9"}
{"type":"ack","id":$ID_HELLO,"ref":"e10"}
{"type":"send","to":"rec","body":"s1 last","ref":"last"}
EOF
ctl agent spawn s1 --env BUS_MODE=script --env "BUS_SCRIPT=$T/s1.script" --env "BUS_LOG=$L/s1.log" \
	-- "$PYBIN" -u "$BUSAGENT" >"$T/spawn.out" 2>&1 || fail "agent spawn s1: $(cat "$T/spawn.out")"
wait_for 10 "s1 ran its script" lt s1 "any(r['ev'] == 'script_done' for r in R)"
wait_for 10 "s1 got its answers" lt s1 "{r['ref'] for r in R if r['ev'] in ('sent', 'error')} >= {'d1', 'b1', 't1', 'c1', 'e1', 'e2', 'ok2', 'e3', 'e4', 'e5', 'e6', 'e7', 'e8', 'e9', 'e10', 'last'}"
lq s1 "'\n'.join('%s %s' % (r['ref'], r['code']) for r in E)" >"$T/s1.errors"
cat >"$T/s1.want" <<EOF
e1 unknown_recipient
e2 body_too_large
e3 bad_priority
e4 bad_mode
e5 send_to_self
e6 bad_topic
e7 bad_topic
e8 bad_topic
e9 unknown_message
e10 not_your_message
EOF
diff "$T/s1.want" "$T/s1.errors" >"$T/s1.diff" || fail "error replies of s1 (ref code), want/got: $(cat "$T/s1.diff")"
lt s1 "[r['ref'] for r in R if r['ev'] == 'sent'] == ['d1', 'b1', 't1', 'c1', 'ok2', 'last']" ||
	fail "s1 sent answers: $(lq s1 "[r for r in R if r['ev'] == 'sent']")"
lt s1 "all(r['detail'] for r in E) and 'nobody' in E[0]['detail']" || fail "error details: $(lq s1 E)"
ht "j == []" --grep REJECT --limit 100000 || fail "a rejected send was stored: $(ctl history --grep REJECT)"
agent_is s1 "j['state'] == 'ready'" || fail "s1 must stay connected after errors: $(ctl agent info s1)"
ok "agent errors, each with its ref: $(cut -d' ' -f2 "$T/s1.errors" | sort -u | tr '\n' ' ')— nothing stored, connection kept"

id_of() { lq s1 "[r['id'] for r in R if r['ev'] == 'sent' and r['ref'] == '$1'][0]"; }
D1=$(id_of d1) B1=$(id_of b1) T1=$(id_of t1) C1=$(id_of c1) OK2=$(id_of ok2)
wait_for 5 "rec got d1" lt rec "any(m['id'] == $D1 for m in M)"
lt rec "[(m['from'], m['to'], m['body'], m['priority'], m['mode'], m.get('reply_to')) for m in M if m['id'] == $D1] == [('s1', 'rec', {'from': 's1'}, 'urgent', 'INTEGRATE', $ID_HELLO)]" ||
	fail "d1 as received: $(lq rec "[m for m in M if m['id'] == $D1]")"
wait_for 5 "rec got the 1024-byte body" lt rec "any(m['id'] == $OK2 and len(m['body']) == 1022 for m in M)"
for a in rec other prio holder; do
	wait_for 5 "$a got s1's broadcast" lt $a "any(m['id'] == $B1 and m['from'] == 's1' and m['to'] == '*' for m in M)"
done
wait_delivered "$B1" "holder:acked other:acked prio:acked rec:acked"
lt s1 "not any(m['id'] == $B1 for m in M)" || fail "s1 got its own broadcast"
wait_delivered "$T1" "rec:acked"
ht "[(r['id'], r['from'], r['to'], r['body'], r['deliveries']) for r in j] == [($C1, 's1', 'captain', 's1 to captain', '')]" --grep "s1 to captain" ||
	fail "message to the captain: $(ctl history --grep 's1 to captain')"
ok "agent send: reply_to, URGENT/integrate → urgent/INTEGRATE, 1024-byte body, broadcast not to itself, #news, to captain"

AL=$(ctl publish alerts wake up --json | json_get 'j["id"]')
wait_for 5 "s1 got #alerts" lt s1 "any(m['id'] == $AL and m['to'] == '#alerts' for m in M)"
wait_delivered "$AL" "s1:acked"
ok "subscribe from an agent: #alerts reaches s1 only"

lt rec "E == []" || fail "acking twice gave errors: $(lq rec E)"
ok "acking a message twice is harmless"

# agent info counts what the agent sent (stored) and what was delivered to it
NS=$(lq s1 "len([r for r in R if r.get('ev') == 'sent'])")
NR=$(lq s1 "len(M)")
[ "$NS" -ge 5 ] && [ "$NR" -ge 1 ] || fail "s1 sent $NS, received $NR"
agent_is s1 "j['messages_sent'] == $NS and j['messages_received'] == $NR" ||
	fail "s1 sent $NS and received $NR: $(ctl agent info s1 --json)"
ok "agent info: messages_sent $NS (stored, errors not counted), messages_received $NR"

# ---- history filters -------------------------------------------------------

H1=$(sendid other "hf quokka one")
H2=$(sendid other "hf wombat two" --mode sync)
H3=$(sendid other "hf quokka three" --priority urgent)
wait_delivered "$H3" "other:acked"
ht "[r['id'] for r in j] == [$H1, $H3]" --grep quokka || fail "history --grep quokka: $(ctl history --grep quokka)"
ht "[r['id'] for r in j] == [$H1, $H2, $H3]" other --grep "hf " || fail "history other --grep: $(ctl history other --grep 'hf ')"
ht "[(r['id'], r['mode']) for r in j] == [($ID_JSON, 'SYNC'), ($H2, 'SYNC')]" --mode sync ||
	fail "history --mode sync: $(ctl history --mode sync)"
ht "[r['id'] for r in j] == [$H2, $H3]" --limit 2 || fail "history --limit 2: $(ctl history --limit 2)"
ht "[r['id'] for r in j] == [$H2]" --grep hf --mode SYNC || fail "--grep with --mode"
ht "all(r['from'] == 'rec' or r['to'] in ('rec', '*') or r['to'].startswith('#') or 'rec:' in r['deliveries'] for r in j) and $ID_HELLO in [r['id'] for r in j] and $H1 not in [r['id'] for r in j]" rec --limit 1000 ||
	fail "history rec: $(ctl history rec --limit 1000)"
ht "[(r['from'], r['to'], r['priority'], r['mode'], r['body']) for r in j] == [('captain', 'other', 'urgent', 'NORMAL', 'hf quokka three')]" --grep three ||
	fail "history fields: $(ctl history --grep three --json)"
ctl history --grep quokka | grep -Eq "^#$H3 [0-9T:.-]+Z captain -> other \[urgent NORMAL\] hf quokka three  \(other:acked\)$" ||
	fail "history text: $(ctl history --grep quokka)"
ht "j == []" --grep no-such-text-anywhere || fail "--grep with no match"
sleep 2
H4=$(sendid other "hf quokka four")
ht "[r['id'] for r in j] == [$H4]" --grep quokka --since 1.5s ||
	fail "history --since 1.5s: $(ctl history --grep quokka --since 1.5s)"
ht "[r['id'] for r in j] == [$H1, $H3, $H4]" --grep quokka --since 1h || fail "history --since 1h"
ctl history --since soon >/dev/null 2>&1
[ $? -eq 2 ] || fail "history --since soon must be a usage error"
ctl history --mode dance >/dev/null 2>&1
[ $? -eq 2 ] || fail "history --mode dance must be a usage error"
ctl history --limit 0 >/dev/null 2>&1
[ $? -eq 2 ] || fail "history --limit 0 must be a usage error"
ok "history: by agent, --grep, --mode, --limit (newest, oldest first), --since, text form, bad values"

# ---- across an orchestrator restart -----------------------------------------

ctl agent stop s1 >/dev/null || fail "agent stop s1"
wait_state s1 stopped
ctl agent stop other >/dev/null || fail "agent stop other"
wait_state other stopped
P=$(sendid other "persist one")
P2=$(sendid other "persist two" --priority high)
LAST=$P2
quit_ok
start_headless --config "$T/bus.yaml"
ht "$ID_HELLO in [r['id'] for r in j] and [r['id'] for r in j][-1] == $P2" --limit 100000 ||
	fail "history after a restart: $(ctl history --limit 5)"
wait_state other ready
wait_for 10 "other got the persisted messages" lt other "{m['body'] for m in M} >= {'persist one', 'persist two'}"
lt other "[m['body'] for m in M][-2:] == ['persist two', 'persist one']" || fail "persisted order: $(lq other "[m['body'] for m in M]")"
wait_delivered "$P" "other:acked"
N1=$(sendid rec "after restart")
# A clean stop gives the reserved ids back: no gap.
[ "$N1" -eq $((LAST + 1)) ] || fail "ids after a restart: $N1 after $LAST"
counts_check "c['last_message_id'] == $N1"
agent_is s1 "j['state'] == 'stopped'" || fail "s1 (stopped) came back: $(ctl agent info s1)"
ok "restart: history kept, other's inbox ($P, $P2) delivered by priority after it, ids go on ($N1 = $LAST + 1)"
quit_ok

# ---- ack timeout: redelivery, dead letters, requeue --------------------------

# A second runtime (lib.sh's ctl and start_headless use $RT).
# shellcheck disable=SC2034
RT="$T/rt2"
{
	core_yaml
	cat <<-EOF
	bus:
	  ack_timeout: 0.5s
	  max_attempts: 3
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef lazy record 'BUS_HOLD: "1"' "BUS_RELEASE: \"$T/release2\""
} >"$T/bus2.yaml"
start_headless --config "$T/bus2.yaml"
wait_state lazy ready
X=$(sendid lazy "never acked")
wait_for 10 "3 attempts of $X" lt lazy "len([m for m in M if m['id'] == $X]) >= 3"
wait_for 5 "$X in dead list" dead_is "[(r['id'], r['to'], r['from'], r['attempts'], r['body']) for r in j] == [($X, 'lazy', 'captain', 3, '\"never acked\"')]"
lt lazy "[m['attempt'] for m in M if m['id'] == $X] == [1, 2, 3]" || fail "attempts: $(lq lazy M)"
lt lazy "(lambda t: t[2] - t[0] >= 0.7)([m['t'] for m in M if m['id'] == $X])" ||
	fail "redeliveries came before bus.ack_timeout: $(lq lazy "[m['t'] for m in M]")"
[ "$(deliv "$X")" = "lazy:dead" ] || fail "history shows $(deliv "$X"), want lazy:dead"
ctl logs --limit 1000 --grep "is dead after 3 attempts" | grep -q "message $X" || fail "no log about the dead message"
ctl dead list | grep -q "never acked" || fail "dead list (text): $(ctl dead list)"
counts_check "c['messages_dead'] >= 1 and c['messages_pending'] == 0"
sleep 1.2
lt lazy "len([m for m in M if m['id'] == $X]) == 3" || fail "a dead message was delivered again: $(lq lazy M)"
ok "ack timeout: $X redelivered with attempt 1, 2, 3 (after bus.ack_timeout each), then dead (dead list, history, log)"

# The recovery floor (a restart reads pending deliveries from there up) is
# saved at a commit point once a second: with $X dead it rises above it,
# and a requeue of $X brings it back down, or a restart would miss it.
floor_of() {
	ctl verify --json | "${PYTHON3:-python3}" -c "import json, re, sys
print([int(re.search(r'below message (\d+)', c['detail']).group(1)) for c in json.load(sys.stdin)['checks'] if c['name'] == 'recovery floor'][0])"
}
F=$(sendid lazy "floor tick")
[ "$(floor_of)" -gt "$X" ] || fail "the recovery floor ($(floor_of)) did not rise above dead $X"
: >"$T/release2"
ctl dead requeue "$X" --json >"$T/rq.out" || fail "dead requeue: $(cat "$T/rq.out")"
jtest "j['requeued'] == 1" <"$T/rq.out" || fail "dead requeue answer: $(cat "$T/rq.out")"
[ "$(floor_of)" -le "$X" ] || fail "the recovery floor ($(floor_of)) stayed above requeued $X"
ctl verify >/dev/null || fail "verify after the requeue: $(ctl verify)"
wait_delivered "$F" "lazy:acked"
wait_for 5 "$X delivered again" lt lazy "len([m for m in M if m['id'] == $X]) >= 4"
lt lazy "[m['attempt'] for m in M if m['id'] == $X][3] == 1" || fail "requeued delivery attempt: $(lq lazy M)"
wait_delivered "$X" "lazy:acked"
dead_is "j == []" || fail "dead list after requeue: $(ctl dead list)"
ctl dead requeue "$X" >/dev/null 2>"$T/rq2.err" && fail "requeue of a message that is not dead must fail"
grep -q "is not dead" "$T/rq2.err" || fail "requeue message: $(cat "$T/rq2.err")"
ctl dead requeue abc >/dev/null 2>&1
[ $? -eq 2 ] || fail "dead requeue abc must be a usage error"
lt lazy "E == []" || fail "lazy got errors (acks of a dead message must be harmless): $(lq lazy E)"
ok "dead requeue $X: delivered again with attempt 1, acked; requeue of a live id refused"

# ---- retention: acked history older than bus.retention goes, pending stays ---
# (pruned at startup and hourly; ids go on from the newest ever given)

# A dead message: every delivery of it dropped on the way (chaos).
ctl chaos drop lazy 1 >/dev/null || fail "chaos drop lazy 1"
D=$(sendid lazy "dies before retention")
wait_for 10 "$D dead" dead_is "$D in [r['id'] for r in j]"
ctl chaos drop lazy 0 >/dev/null || fail "chaos drop lazy 0"
ctl agent stop lazy >/dev/null || fail "agent stop lazy"
wait_state lazy stopped
W=$(sendid lazy "waits past retention")
quit_ok "rt2, retention"
sed 's/^  max_attempts: 3$/&\n  retention: 5s/' "$T/bus2.yaml" >"$T/bus2r.yaml"
grep -q "retention: 5s" "$T/bus2r.yaml" || fail "bus2r.yaml: $(cat "$T/bus2r.yaml")"
sleep 5.2
start_headless --config "$T/bus2r.yaml"
ht "[r['id'] for r in j] == [$D, $W]" --limit 1000 ||
	fail "after retention, history is $(hist_ids), want [$D, $W]"
dead_is "[r['id'] for r in j] == [$D]" || fail "dead list after pruning: $(ctl dead list)"
ctl verify >/dev/null || fail "verify after pruning: $(ctl verify)"
wait_delivered "$W" "lazy:acked"
N2=$(sendid lazy "after pruning")
[ "$N2" -gt "$W" ] || fail "id after pruning: $N2, not above $W"
ht "[r['id'] for r in j] == [$D, $W, $N2]" --since 1h || fail "history --since 1h after pruning"
wait_delivered "$N2" "lazy:acked"
quit_ok "rt2, retention 2"
start_headless --config "$T/bus2r.yaml"
ht "[r['id'] for r in j] == [$D, $N2]" --limit 1000 ||
	fail "second pruning: history is $(hist_ids), want [$D, $N2] (acked $W older than 5 s, $N2 younger, $D dead)"
ok "retention 5s: acked $X and $F pruned at startup, dead $D and pending $W kept; once acked and old, $W too, younger $N2 not; ids go on ($N2)"

quit_ok "rt2"

# ---- retention drops whole blocks ---------------------------------------------
# Messages are stored a commit's worth to a block (src/core/packtab.h), and
# retention deletes whole blocks: an acked message committed together with a
# pending one stays until that one is acked and old too.  A script agent
# sends pairs, one to an agent that acks and one to an agent that does not,
# each pair in two writes back to back (one read, one commit, mostly).
RT="$T/rtb"
: >"$T/bk.txt"
for k in 1 2 3 4 5 6 7 8; do
	printf '#sleep 0.2\n{"type":"send","to":"acker","body":"a%s","ref":"a%s"}\n' "$k" "$k"
	printf '{"type":"send","to":"napper","body":"p%s","ref":"p%s"}\n' "$k" "$k"
done >"$T/bk.txt"
busb_yaml() { # NAPPER_ENV...: the config, napper's env extended
	core_yaml
	cat <<-EOF
	bus:
	  retention: 5s
	  ack_timeout: 60s
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef acker record
	agentdef napper record "$@"
	agentdef pairs script "BUS_SCRIPT: \"$T/bk.txt\""
}
busb_yaml 'BUS_NOACK: "1"' >"$T/busb.yaml"
start_headless --config "$T/busb.yaml"
wait_for 15 "the pairs sent" lt pairs "len([r for r in R if r.get('ev') == 'sent']) == 16"
# The first pair that went into one block.
BA="" BP=""
for k in 1 2 3 4 5 6 7 8; do
	a=$(lq pairs "[r['id'] for r in R if r.get('ref') == 'a$k'][0]")
	p=$(lq pairs "[r['id'] for r in R if r.get('ref') == 'p$k'][0]")
	if [ "$(sqlite3 -readonly "$RT/dreamos.db" "SELECT count(*) FROM message_blocks WHERE \
		first_id <= min($a, $p) AND last_id >= max($a, $p)")" = 1 ]; then
		BA=$a BP=$p
		break
	fi
done
[ -n "$BA" ] || fail "no pair of sends went into one block: $(sqlite3 -readonly "$RT/dreamos.db" \
	'SELECT first_id, last_id FROM message_blocks')"
# past_retention WHAT CONFIG: quit, wait out bus.retention (5 s), start
# again with CONFIG (retention prunes at startup).
past_retention() {
	quit_ok "$1"
	sleep 5.2
	start_headless --config "$2"
}
wait_delivered "$BA" "acker:acked"
past_retention "rtb" "$T/busb.yaml"
ht "{$BA, $BP} <= set(r['id'] for r in j)" --limit 1000 ||
	fail "retention dropped part of a block: history is $(hist_ids), want $BA and $BP in it"
quit_ok "rtb 2"
busb_yaml >"$T/busb2.yaml" # (napper acks now)
start_headless --config "$T/busb2.yaml"
wait_delivered "$BP" "napper:acked"
past_retention "rtb 3" "$T/busb2.yaml"
ht "not {$BA, $BP} & set(r['id'] for r in j)" --limit 1000 ||
	fail "retention kept an old block with nothing pending: $(hist_ids)"
quit_ok "rtb 4"
ok "retention by block: acked $BA stays while $BP, committed with it, is pending; both go once $BP is acked and old"

# ---- attempts survive a kill -9 of dreamos -------------------------------------
# The attempt count is written once the delivery has been in flight 100 ms
# without an ack; after a crash the message comes back with the next attempt,
# so max_attempts holds even for a message that crashes the orchestrator.

# shellcheck disable=SC2034
RT="$T/rt3"
{
	core_yaml
	cat <<-EOF
	bus:
	  ack_timeout: 60s   # only the restart redelivers
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef keeper record 'BUS_HOLD: "1"' "BUS_RELEASE: \"$T/release3\""
} >"$T/bus3.yaml"
start_headless --config "$T/bus3.yaml"
wait_state keeper ready
K=$(sendid keeper "kept")
wait_for 5 "keeper holds $K" lt keeper "[m['attempt'] for m in M if m['id'] == $K] == [1]"
K1=$(field keeper pid)
sleep 0.3 # past the 100 ms and the commit point
kill -KILL "$PID"
wait_exit "$PID" 5
start_headless --config "$T/bus3.yaml"
wait_for 10 "$K again after the crash" lt keeper "len([m for m in M if m['id'] == $K]) >= 2"
lt keeper "[(m['attempt'], m['pid'] != $K1) for m in M if m['id'] == $K] == [(1, False), (2, True)]" ||
	fail "attempts across a crash: $(lq keeper M)"
: >"$T/release3"
wait_delivered "$K" "keeper:acked"
# Messages are routed before their commit, so ids up to the reservation
# (1,000,000 at a time) may have been seen: the next run starts above them.
K2=$(sendid keeper "after the crash")
[ "$K2" -gt $((K + 900000)) ] || fail "the id after a kill -9 ($K2) is not above the reservation (last $K)"
wait_delivered "$K2" "keeper:acked"
ok "kill -9 of dreamos: $K delivered again with attempt 2 (the first attempt was stored); new ids start above the reserved ones ($K2)"

# ---- acked-through marks across a kill -9 --------------------------------------
# An ack in id order moves keeper's mark and writes no row; one that comes
# back behind a message still pending gets its own row, and the mark stays
# below the pending one.  After a kill -9, exactly the pending one returns.
# sqlq SQL: one value from the database of the runtime in use, $RT
# (read-only, beside the live one).
sqlq() {
	"${PYTHON3:-python3}" -c "import sqlite3, sys
db = sqlite3.connect('file:$RT/dreamos.db?mode=ro', uri=True)
print(db.execute(sys.argv[1]).fetchone()[0])" "$1"
}
ctl chaos drop keeper 1 >/dev/null || fail "chaos drop keeper 1"
MA=$(sendid keeper "mark A")
ctl chaos drop keeper 0 >/dev/null || fail "chaos drop keeper 0"
MB=$(sendid keeper "mark B")
MC=$(sendid keeper "mark C")
wait_delivered "$MC" "keeper:acked"
wait_delivered "$MB" "keeper:acked"
delivered_as "$MA" "keeper:pending" || fail "$MA (lost on the way) shows $(deliv "$MA")"
sleep 0.3 # the commit point
[ "$(sqlq "SELECT count(*) FROM deliveries WHERE state = 1 AND msg_id IN ($MB, $MC)")" = 2 ] ||
	fail "acks behind pending $MA have no rows of their own"
[ "$(sqlq "SELECT coalesce((SELECT msg_id FROM acks_through WHERE recipient = 'keeper'), 0) < $MA")" = 1 ] ||
	fail "keeper's mark passed pending $MA: $(sqlq "SELECT msg_id FROM acks_through WHERE recipient = 'keeper'")"
kill -KILL "$PID"
wait_exit "$PID" 5
start_headless --config "$T/bus3.yaml"
wait_delivered "$MA" "keeper:acked"
lt keeper "[m['id'] for m in M if m['id'] in ($MA, $MB, $MC)] == [$MB, $MC, $MA]" ||
	fail "after the crash: $(lq keeper "[(m['id'], m['attempt']) for m in M if m['id'] in ($MA, $MB, $MC)]")"
# Now in order: D and E acked, no rows, the mark at E or above; a crash
# brings neither back.
MD=$(sendid keeper "mark D")
ME=$(sendid keeper "mark E")
wait_delivered "$ME" "keeper:acked"
wait_delivered "$MD" "keeper:acked"
sleep 0.3
[ "$(sqlq "SELECT count(*) FROM deliveries WHERE msg_id IN ($MD, $ME)")" = 0 ] ||
	fail "acks in id order wrote rows: $(sqlq "SELECT group_concat(msg_id) FROM deliveries WHERE msg_id IN ($MD, $ME)")"
[ "$(sqlq "SELECT msg_id >= $ME FROM acks_through WHERE recipient = 'keeper'")" = 1 ] ||
	fail "keeper's mark is not at $ME: $(sqlq "SELECT msg_id FROM acks_through WHERE recipient = 'keeper'")"
ctl verify >/dev/null || fail "verify with marks: $(ctl verify)"
kill -KILL "$PID"
wait_exit "$PID" 5
start_headless --config "$T/bus3.yaml"
wait_state keeper ready
sleep 0.5
lt keeper "len([m for m in M if m['id'] in ($MD, $ME)]) == 2" ||
	fail "acked in order, delivered again after a crash: $(lq keeper "[(m['id'], m['attempt']) for m in M if m['id'] in ($MD, $ME)]")"
delivered_as "$MD" "keeper:acked" || fail "$MD after the crash: $(deliv "$MD")"
ctl verify >/dev/null || fail "verify after the crash: $(ctl verify)"
ok "acked-through mark: acks behind pending $MA got rows, the mark stayed below it, a kill -9 brought back $MA alone; $MD, $ME acked in order wrote no rows and stayed acked across a kill -9"

# The case the reservation is for: a message routed to keeper whose commit
# then fails (never stored), then a kill -9; its id must not come back.
ctl chaos store full >/dev/null || fail "chaos store full"
ctl send keeper "never stored" >/dev/null 2>&1 && fail "a send was acknowledged while commits fail"
wait_for 5 "keeper to get the unstored message" lt keeper "any(m['body'] == 'never stored' for m in M)"
U=$(lq keeper "[m['id'] for m in M if m['body'] == 'never stored'][0]")
kill -KILL "$PID"
wait_exit "$PID" 5
start_headless --config "$T/bus3.yaml"
wait_state keeper ready
U2=$(sendid keeper "stored after")
[ "$U2" -gt "$U" ] || fail "id $U, seen by keeper but never stored, was given again ($U2) after a kill -9"
ctl history --grep "never stored" --json | jtest "j == []" || fail "the unstored message is in history"
wait_delivered "$U2" "keeper:acked"
ok "a message routed but never stored (commit failed), then kill -9: its id ($U) is not given again ($U2)"

quit_ok
no_agent_left
ok "quit: exit 0, no agent process left"

# What the stores kept: a broadcast's delivery rows are written at its
# commit point, already acked if the ack came first, a direct message's when
# dead, in flight for 100 ms, or acked behind one still pending (an ack in
# id order moves its target's acked-through mark instead); each must carry
# its real attempt count and state, and come no earlier than its message.
for db in "$T/rt/dreamos.db" "$T/rt3/dreamos.db"; do
	"${PYTHON3:-python3}" - "$db" <<'PYEOF' || fail "the deliveries stored in $db are not what happened"
import os, subprocess, sys
# Through the sqlite3 shell with dreamos's SQLite module: `messages` is a
# virtual table over the message blocks (src/core/packtab.h).
ext = os.path.join(os.environ["top_builddir"], ".libs", "dreamos_sqlite")
def q(sql):
    out = subprocess.run(["sqlite3", "-readonly", "-cmd", ".load " + ext, sys.argv[1], sql],
                         capture_output=True, text=True)
    if out.returncode != 0 or out.stderr:
        sys.exit("sqlite3: %s: %s" % (sql, out.stderr.strip()))
    return int(out.stdout.strip() or 0)
acked = q("SELECT count(*) FROM deliveries WHERE state = 1")
marks = q("SELECT count(*) FROM acks_through")
# A direct message with no row at or below its target's mark is acked.
marked = q("SELECT count(*) FROM messages m WHERE m.target NOT IN ('*', 'captain') AND "
           "substr(m.target, 1, 1) != '#' AND NOT EXISTS (SELECT 1 FROM deliveries d "
           "WHERE d.msg_id = m.id) AND m.id <= (SELECT msg_id FROM acks_through a WHERE "
           "a.recipient = m.target)")
bad = q("SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.msg_id WHERE "
        "(d.state IN (1, 2) AND d.attempt < 1) OR d.updated_ms < m.ts_ms OR d.state NOT IN (0, 1, 2)")
orphans = q("SELECT count(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = d.msg_id)")
# A direct message has one delivery row at most, its target's (none while
# it is pending: its row alone says so, nor once acked in order: the mark).
direct = "m.target NOT IN ('*', 'captain') AND substr(m.target, 1, 1) != '#'"
stray = q("SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.msg_id WHERE " + direct +
          " AND d.recipient != m.target")
if acked < 1 or bad or orphans or stray or marks < 1 or marked < 1:
    sys.exit("%s: %d acked, %d with a bad attempt, state or time, %d without their message, "
             "%d of a direct message for another agent, %d marks covering %d messages" %
             (sys.argv[1], acked, bad, orphans, stray, marks, marked))
PYEOF
done
ok "the stores: every acked or dead delivery with its attempt count, none before its message"

# ---- flow control: a sender to a full queue is throttled, not refused --------
# slow holds its messages (window 8); flood sends 3,000 as fast as it can.
# Past bus.high_water (20) queued for slow, dreamos stops reading flood's
# lines: flood's sends pile up in its pipe, none refused.  Once slow acks,
# its queue drains below half and flood goes on to the end.

# shellcheck disable=SC2034
RT="$T/rt4"
{
	core_yaml
	cat <<-EOF
	bus:
	  window: 8
	  high_water: 20
	  ack_timeout: 60s
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef slow record 'BUS_HOLD: "1"' "BUS_RELEASE: \"$T/release4\""
	agentdef flood produce 'BUS_N: "3000"' 'BUS_TO: slow'
	printf '      capabilities: [floodwork]\n'
	# Two agents flooding each other (and acking what they get): neither
	# may end up waiting for the other.
	agentdef ping produce 'BUS_N: "3000"' 'BUS_TO: pong'
	agentdef pong produce 'BUS_N: "3000"' 'BUS_TO: ping'
} >"$T/bus4.yaml"
start_headless --config "$T/bus4.yaml"
wait_state slow ready
wait_for 10 "flood throttled by slow" agent_is flood "j.get('throttled_by') == 'slow'"
nsent() { lq flood "len([r for r in R if r.get('ev') == 'sent'])"; }
S1=$(nsent)
sleep 1
S2=$(nsent)
[ "$S1" = "$S2" ] || fail "flood kept being answered while throttled: $S1 then $S2 sent"
[ "$S2" -lt 1000 ] || fail "flood got $S2 of 3000 sends through a queue limit of 20"
lt flood "E == []" || fail "flood got errors instead of back-pressure: $(lq flood E)"
agent_is flood "j['state'] == 'ready'" || fail "flood while throttled: $(ctl agent info flood)"
ctl agent list | grep "^flood " | grep -q "held: slow's queue is full" ||
	fail "agent list does not say flood is held: $(ctl agent list)"
counts_check "c['messages_throttled'] >= 1"
# A held agent gets no task (its result would wait unread): one that only
# flood can take waits, and goes to flood once it is let go.
FT=$(ctl task add "for flood" --cap floodwork --retries 0 --json | json_get 'j["id"]')
sleep 1
ctl task show "$FT" --json | jtest "j['state'] == 'queued' and j['attempt'] == 0" ||
	fail "a task went to flood while it was held: $(ctl task show "$FT")"
: >"$T/release4"
wait_for 20 "the task to reach flood once it is let go" eval \
	"ctl task show $FT --json | jtest \"j['attempt'] == 1 and j['agent'] == 'flood'\""
wait_for 60 "flood done" lt flood "any(r.get('ev') == 'done' for r in R)"
wait_for 30 "slow got all 3000" lt slow "len({m['body']['seq'] for m in M}) == 3000"
lt flood "E == [] and len([r for r in R if r.get('ev') == 'sent']) == 3000" ||
	fail "flood after the release: $(lq flood "[len(E), len([r for r in R if r.get('ev') == 'sent'])]")"
agent_is flood "'throttled_by' not in j" || fail "flood still throttled: $(ctl agent info flood)"
T1=$(ctl status --json | json_get "j['counts']['messages_throttled']")
ok "flow control: flood stopped at $S2 of 3000 sends while slow held (bus.high_water 20), none refused, given no task; after the release all 3000 delivered and the task taken ($T1 throttles)"
for a in ping pong; do
	wait_for 60 "$a done" lt $a "any(r.get('ev') == 'done' for r in R)"
	wait_for 30 "$a got all 3000" lt $a "len({m['body']['seq'] for m in M}) == 3000"
	lt $a "E == []" || fail "$a got errors: $(lq $a E)"
done
ok "flow control: ping and pong, each sending 3000 to the other, both finish (no waiting on each other)"

quit_ok "rt4"
no_agent_left "rt4"

# ---- flow control when every message in flight dies at once ------------------
# sink never acks (window 50, max_attempts 1): each ack timeout kills all 50
# in flight in one pass, and the next 50 must go out then, or drain (whose
# sender is throttled, and so cannot send what would wake the inbox) would
# wait for ever.

# shellcheck disable=SC2034
RT="$T/rt5"
{
	core_yaml
	cat <<-EOF
	bus:
	  window: 50
	  high_water: 10
	  ack_timeout: 0.3s
	  max_attempts: 1
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef sink record 'BUS_NOACK: "1"'
	agentdef drain produce 'BUS_N: "400"' 'BUS_TO: sink'
	# burst writes 1,500 sends and exits at once, most of them still in its
	# pipe, unread while it is throttled: they must be read all the same.
	agentdef burst script "BUS_SCRIPT: \"$T/burst.txt\"" 'BUS_NOACK: "1"'
} >"$T/bus5.yaml"
"$PY" -c 'import json
for i in range(1500):
    print(json.dumps({"type": "send", "to": "sink", "body": "b%d" % i, "ref": "r%d" % i}))
print("#exit")' >"$T/burst.txt"
start_headless --config "$T/bus5.yaml"
wait_for 30 "drain done" lt drain "any(r.get('ev') == 'done' for r in R)"
wait_for 10 "burst ended" agent_is burst "j['state'] == 'stopped'"
wait_for 10 "1900 dead" counts_quiet "c['messages_dead'] == 1900 and c['messages_pending'] == 0"
lt drain "E == []" || fail "drain got errors: $(lq drain E)"
counts_check "c['messages_throttled'] >= 1"
ok "flow control: 400 messages to an agent that never acks all die after 1 attempt, 50 at a time, while their sender is throttled; 1,500 sends left in the pipe of an agent that exited throttled all taken"
quit_ok "rt5"

# ---- a throttled agent and its heartbeats --------------------------------------
# With heartbeat_timeout 1s, a sender held back for longer than that is let go
# (its lines, heartbeats among them, are read; its next sends to the full
# queue hold it again): it is never taken for hung, and a link that died
# while it was held would show.

# shellcheck disable=SC2034
RT="$T/rt6"
{
	core_yaml
	cat <<-EOF
	bus:
	  window: 8
	  high_water: 20
	agents:
	  heartbeat_timeout: 1s
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef slow6 record 'BUS_HOLD: "1"' "BUS_RELEASE: \"$T/release6\""
	agentdef flood6 produce 'BUS_N: "3000"' 'BUS_TO: slow6'
} >"$T/bus6.yaml"
start_headless --config "$T/bus6.yaml"
wait_for 10 "flood6 throttled" agent_is flood6 "j.get('throttled_by') == 'slow6'"
S1=$(lq flood6 "len([r for r in R if r.get('ev') == 'sent'])")
sleep 3.5
S2=$(lq flood6 "len([r for r in R if r.get('ev') == 'sent'])")
[ "$S2" -gt "$S1" ] || fail "flood6 was not let go after heartbeat_timeout: $S1 then $S2 sent"
[ "$S2" -lt 3000 ] || fail "flood6 was not held back: $S2 sent"
agent_is flood6 "j['state'] == 'ready' and j['restarts'] == 0" ||
	fail "flood6 taken for hung while throttled: $(ctl agent info flood6)"
: >"$T/release6"
wait_for 60 "flood6 done" lt flood6 "any(r.get('ev') == 'done' for r in R)"
lt flood6 "E == []" || fail "flood6 errors: $(lq flood6 E)"
ok "throttled with heartbeat_timeout 1s: let go once a timeout ($S1 then $S2 sent in 3.5 s), never restarted, all 3000 sent after the release"
quit_ok "rt6"

# ---- a dead message lets the acked-through mark pass ---------------------------
# A message that dies (every delivery dropped, max_attempts 2) is final once
# its dead row has committed: rec7's mark then passes it, so the acks in id
# order after it write no rows, and a kill -9 brings none of them back.  (If
# the dead one held the mark, every later ack would be one behind a pending
# message and get its own row.)

# shellcheck disable=SC2034
RT="$T/rt7"
{
	core_yaml
	cat <<-EOF
	bus:
	  ack_timeout: 0.3s
	  max_attempts: 2
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef rec7 record
} >"$T/bus7.yaml"
start_headless --config "$T/bus7.yaml"
wait_state rec7 ready
ctl chaos drop rec7 1 >/dev/null || fail "chaos drop rec7 1"
DA=$(sendid rec7 "dies on the way")
wait_for 5 "$DA dead" delivered_as "$DA" "rec7:dead"
ctl chaos drop rec7 0 >/dev/null || fail "chaos drop rec7 0"
DB=$(sendid rec7 "after the dead one")
DC=$(sendid rec7 "and one more")
wait_delivered "$DC" "rec7:acked"
wait_delivered "$DB" "rec7:acked"
sleep 0.3 # the commit point
[ "$(sqlq "SELECT group_concat(msg_id || ':' || state) FROM deliveries")" = "$DA:2" ] ||
	fail "rows after $DA died: $(sqlq "SELECT group_concat(msg_id || ':' || state) FROM deliveries"), want only $DA's dead row"
[ "$(sqlq "SELECT coalesce((SELECT msg_id FROM acks_through WHERE recipient = 'rec7'), 0) >= $DC")" = 1 ] ||
	fail "rec7's mark did not pass dead $DA to $DC: $(sqlq "SELECT msg_id FROM acks_through WHERE recipient = 'rec7'")"
kill -KILL "$PID"
wait_exit "$PID" 5
start_headless --config "$T/bus7.yaml"
wait_state rec7 ready
sleep 0.5
lt rec7 "[m['id'] for m in M] == [$DB, $DC]" ||
	fail "rec7 after the crash got $(lq rec7 "[(m['id'], m['attempt']) for m in M]"), want $DB, $DC once"
dead_is "[r['id'] for r in j] == [$DA]" || fail "dead list after the crash: $(ctl dead list)"
for id in "$DB" "$DC"; do delivered_as "$id" "rec7:acked" || fail "$id after the crash: $(deliv "$id")"; done
ctl verify >/dev/null || fail "verify with a dead message under the mark: $(ctl verify)"
ok "dead $DA let rec7's acked-through mark pass: $DB, $DC acked in order wrote no rows, and a kill -9 brought back none of the three ($DA stays dead)"
quit_ok "rt7"

# ---- bodies past the size of the bus's reused buffers ---------------------------
# The bus builds every `message` line, and copies every body an agent sends,
# in buffers it keeps for the next one, up to 64 KiB (BUS_LINE_KEEP): a
# bigger one is let go and made again.  Big and small bodies in turn, from
# an agent and from the captain, arrive whole and in order.

# shellcheck disable=SC2034
RT="$T/rt8"
{
	core_yaml
	cat <<-EOF
	bus:
	  max_body: 256KiB
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef rec8 record
} >"$T/bus8.yaml"
start_headless --config "$T/bus8.yaml"
wait_state rec8 ready
"$PY" - "$T/s8.script" <<-'EOF'
	import json, sys
	with open(sys.argv[1], "w") as f:
	    for i, n in enumerate([200000, 10, 70000, 3, 250000, 65536]):
	        body = chr(ord("a") + i) * n
	        f.write(json.dumps({"type": "send", "to": "rec8", "body": body, "ref": "b%d" % i}) + "\n")
	EOF
ctl agent spawn s8 --env BUS_MODE=script --env "BUS_SCRIPT=$T/s8.script" --env "BUS_LOG=$L/s8.log" \
	-- "$PYBIN" -u "$BUSAGENT" >"$T/spawn8.out" 2>&1 || fail "agent spawn s8: $(cat "$T/spawn8.out")"
wait_for 10 "s8's six sends answered" lt s8 "len([r for r in R if r['ev'] == 'sent']) == 6"
BIG=$(printf '%90000s' '' | tr ' ' q)
ctl send rec8 "$BIG" >/dev/null || fail "captain send of 90,000 bytes"
ctl send rec8 "small after" >/dev/null || fail "captain send after it"
wait_for 10 "rec8 got all eight" lt rec8 "len(M) == 8"
lt rec8 "[(m['from'], len(m['body']), m['body'][:1], m['body'][-1:]) for m in M] == [('s8', 200000, 'a', 'a'), ('s8', 10, 'b', 'b'), ('s8', 70000, 'c', 'c'), ('s8', 3, 'd', 'd'), ('s8', 250000, 'e', 'e'), ('s8', 65536, 'f', 'f'), ('captain', 90000, 'q', 'q'), ('captain', 11, 's', 'r')]" ||
	fail "bodies as received: $(lq rec8 "[(m['from'], len(m['body'])) for m in M]")"
lt rec8 "all(set(m['body']) == {m['body'][0]} for m in M[:7])" || fail "a big body came back changed"
ok "bodies of 200,000, 10, 70,000, 3, 250,000 and 65,536 bytes from an agent, then 90,000 and 11 from the captain, arrive whole and in order"
quit_ok "rt8"

# ---- a window larger than a MiB of lines, to an agent whose writes block --------
# Reading an agent stops while a MiB waits to be written to it (it is not
# reading), but not for the messages in flight to it: an agent that writes
# each ack before it reads on (as busagent.py's SDK does, a blocking
# write) fills its stdout with acks once we stop reading it, and stops
# reading its stdin, which our queue waits on.  prod9 sends 20,000 messages
# (about 3 MB of lines) as fast as it can to sink9, which reads slowly
# (BUS_DELAY), so that they pile up towards it (window 20,000): every one
# must arrive and be acked, none may die.

# shellcheck disable=SC2034
RT="$T/rt9"
{
	core_yaml
	cat <<-EOF
	bus:
	  window: 20000
	  high_water: 100000
	  ack_timeout: 120s
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef sink9 record 'BUS_DELAY: "0.0001"'
	agentdef prod9 produce 'BUS_TO: sink9' 'BUS_N: "20000"' 'BUS_INFLIGHT: "2000"'
} >"$T/bus9.yaml"
start_headless --config "$T/bus9.yaml"
wait_for 60 "prod9 sent 20,000" lt prod9 "any(r['ev'] == 'done' and r['sent'] == 20000 for r in R)"
wait_for 60 "sink9 got 20,000 messages" \
	lt sink9 "len(set(m['id'] for m in M)) == 20000"
wait_for 30 "every message acked" counts_quiet "c['messages_pending'] == 0"
dead_is "j == []" || fail "dead messages: $(ctl dead list | head -n 5)"
# (Stuck, it was restarted at its heartbeat timeout and got them again.)
[ "$(field sink9 restarts)" = 0 ] || fail "sink9 was restarted: $(ctl agent info sink9)"
lt sink9 "len(M) == 20000 and all(m['attempt'] == 1 for m in M)" ||
	fail "sink9 got messages twice: $(lq sink9 "len(M)") receptions"
ok "window 20,000 to a slow agent with blocking writes: all 20,000 (about 3 MB of lines) arrived once and were acked, the agent never stuck (no restart), none died"
quit_ok "rt9"

# The same with redeliveries: with an ack timeout of 3 s, messages still
# queued to sink9b (or read, not yet acked) are sent again while their
# first copy waits, and the link must not count the copies as output it
# is not reading either (the queue is weighed by what it holds, outq.h,
# not by the messages in flight, which a copy leaves).  Bigger bodies
# (BUS_PAD) and a slower reader, so that copies pile up; the reader stalls
# 4 s at its first message, so that some are sent again however fast
# dreamos is (under valgrind the reader kept up, and none was).
# shellcheck disable=SC2034
RT="$T/rt9b"
{
	core_yaml
	cat <<-EOF
	bus:
	  window: 20000
	  high_water: 100000
	  ack_timeout: 3s
	  max_attempts: 1000
	agents:
	  hello_timeout: 5s
	  stop_grace: 2s
	  list:
	EOF
	agentdef sink9b record 'BUS_DELAY: "0.0005"' 'BUS_STALL: "4"'
	agentdef prod9b produce 'BUS_TO: sink9b' 'BUS_N: "20000"' 'BUS_INFLIGHT: "2000"' 'BUS_PAD: "500"'
} >"$T/bus9b.yaml"
start_headless --config "$T/bus9b.yaml"
wait_for 90 "sink9b got 20,000 messages" \
	lt sink9b "len(set(m['id'] for m in M)) == 20000"
wait_for 60 "every message acked" counts_quiet "c['messages_pending'] == 0"
dead_is "j == []" || fail "dead messages: $(ctl dead list | head -n 5)"
[ "$(field sink9b restarts)" = 0 ] || fail "sink9b was restarted: $(ctl agent info sink9b)"
lt sink9b "any(m['attempt'] > 1 for m in M)" || fail "no message was sent twice: the case was not tested"
ok "the same with an ack timeout of 3 s: $(lq sink9b 'len(M)') receptions of the 20,000 (copies of messages not yet acked), the agent never stuck, none died"

# The other side of that rule: what is not owed still counts.  flood9 says
# hello and then writes `send` lines for good (yes(1)) and never reads: the
# `sent` answers pile up towards it until a MiB waits, then it is not read
# any more, so what dreamos takes from it stops growing (to a topic nobody
# listens to: no recipient's queue holds it back).
ctl agent spawn flood9 -- sh -c 'echo "{\"type\":\"hello\",\"proto\":1,\"name\":\"flood9\"}"; exec yes "{\"type\":\"send\",\"to\":\"#void\",\"body\":\"x\"}"' \
	>"$T/spawn9.out" 2>&1 || fail "agent spawn flood9: $(cat "$T/spawn9.out")"
accepted() { ctl status --json | json_get "j['counts']['messages']"; }
A0=$(accepted)
# Until nothing more is taken in a second (20 s at most).
A1=$A0 A2=-1 i=0
while [ "$A2" != "$A1" ] && [ $i -lt 20 ]; do
	A1=$A2
	sleep 1
	A2=$(accepted)
	i=$((i + 1))
done
[ "$A2" -gt "$A0" ] || fail "flood9's sends were not taken: $A0 then $A2"
[ "$A2" = "$A1" ] && [ $((A2 - A0)) -lt 200000 ] ||
	fail "flood9, which reads nothing, was read on: $A0, then $A1 and $A2 messages a second apart"
ctl agent stop flood9 >/dev/null || fail "agent stop flood9"
ok "an agent that writes for good and reads nothing is not read past a MiB of answers: $((A2 - A0)) of its sends taken, then none"
quit_ok "rt9b"
no_agent_left "rt4-rt9b"
