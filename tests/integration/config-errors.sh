#!/bin/sh
# config-errors.sh — a bad configuration stops dreamos before anything
# starts, with FILE:LINE: KEY in the message, and leaves nothing behind.
. "${top_srcdir:-.}/tests/integration/lib.sh"

# expect_bad NAME LINE KEY TEXT: writes TEXT to a file, starts dreamos with
# it and checks the exit status and the message.
expect_bad() {
	f="$T/$1.yaml"
	printf '%s\n' "$4" >"$f"
	"$DREAMOS" --headless --runtime "$RT" --config "$f" </dev/null >/dev/null 2>"$T/$1.err"
	rc=$?
	[ $rc -eq 1 ] || fail "$1: exit status $rc, want 1"
	grep -q "^dreamos: $f:$2: $3: " "$T/$1.err" || fail "$1: message: $(cat "$T/$1.err")"
	[ ! -e "$RT/dreamos.sock" ] || fail "$1: socket left behind"
	[ ! -e "$RT/dreamos.lock" ] || fail "$1: lock left behind"
	ok "$1: $(cat "$T/$1.err")"
}

expect_bad unknown-key 3 bridge.prot 'bridge:
  host: 127.0.0.1
  prot: 8000'
expect_bad wrong-type 2 bridge.port 'bridge:
  port: eighty'
expect_bad port-range 4 bridge.port '# comment
bridge:
  host: 127.0.0.1
  port: 70000'
expect_bad bad-level 2 logging.level 'logging:
  level: loud'
expect_bad open-bridge 4 security.auth_type 'bridge:
  host: 0.0.0.0
security:
  auth_type: none'
grep -q 'needs a loopback bridge.host' "$T/open-bridge.err" || fail "open-bridge: $(cat "$T/open-bridge.err")"
expect_bad bad-top 1 bridges 'bridges: {}'

"$DREAMOS" --headless --runtime "$RT" --config "$T/missing.yaml" </dev/null >/dev/null 2>"$T/missing.err"
[ $? -eq 1 ] || fail "missing config must fail"
grep -q "missing.yaml" "$T/missing.err" || fail "missing config message"
ok "missing config file"

DREAMOS_CONFIG="$T/port-range.yaml" "$DREAMOS" --headless --runtime "$RT" </dev/null >/dev/null 2>&1
[ $? -eq 1 ] || fail "DREAMOS_CONFIG is honoured"
ok "DREAMOS_CONFIG"

# The shipped example configuration is valid and starts.
start_headless --config "${top_srcdir:-.}/share/dreamos.yaml"
ctl status --json | json_get 'j["config"]' | grep -q 'share/dreamos.yaml' || fail "config path in status"
ok "share/dreamos.yaml starts"
