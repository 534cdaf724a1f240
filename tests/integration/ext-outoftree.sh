#!/bin/sh
# ext-outoftree.sh — the example extension builds outside the source tree,
# against an installed dreamos only: `make install DESTDIR=...` of this
# build, then share/examples/hello-ext (as installed) is built with its own
# Makefile, finding the header through the installed dreamos.pc
# (PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR point into the DESTDIR tree).
# The result is loaded into dreamos: its command answers, its agent type
# echoes a message back to the captain.  Skipped (77) without a C compiler,
# pkg-config or make.
. "${top_srcdir:-.}/tests/integration/lib.sh"

MAKE_CMD=${MAKE:-make}
CC_CMD=${CC:-cc}
command -v "$CC_CMD" >/dev/null 2>&1 || { echo "skip: no C compiler"; exit 77; }
command -v pkg-config >/dev/null 2>&1 || { echo "skip: no pkg-config"; exit 77; }
command -v "${MAKE_CMD%% *}" >/dev/null 2>&1 || { echo "skip: no make"; exit 77; }
PY=${PYTHON3:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no $PY"
B=$(cd "${top_builddir:-.}" && pwd)

# Install this build into a staging tree (the parent make's jobserver and
# flags stay out of it).
DEST="$T/inst"
(cd "$B" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $MAKE_CMD install DESTDIR="$DEST") \
	>"$T/install.log" 2>&1 || { tail -n 30 "$T/install.log" >&2; fail "make install failed"; }
PC=$(find "$DEST" -name dreamos.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$PC" ] || fail "dreamos.pc is not installed"
HDR=$(find "$DEST" -path '*/include/dreamos/extension.h' | head -n 1)
[ -n "$HDR" ] || fail "dreamos/extension.h is not installed"
EXAMPLE=$(find "$DEST" -type d -path '*/examples/hello-ext' | head -n 1)
[ -n "$EXAMPLE" ] || fail "share/examples/hello-ext is not installed"
find "$DEST" -name dreamos-extension.3 | grep -q . || fail "dreamos-extension(3) is not installed"
find "$DEST" -type d -path '*/dreamos/extensions' | grep -q . ||
	fail "the extensions directory is not installed"
ok "make install DESTDIR puts the header, dreamos.pc, the man page and the example in place"

PKG_CONFIG_PATH=$(dirname "$PC")
PKG_CONFIG_SYSROOT_DIR=$DEST
PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH # only the staged dreamos, never a system one
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
CFLAGS_GOT=$(pkg-config --cflags dreamos) || fail "pkg-config --cflags dreamos"
case "$CFLAGS_GOT" in
*"$DEST"*) ;;
*) fail "pkg-config --cflags dreamos gives '$CFLAGS_GOT', not a path in $DEST" ;;
esac
API_HDR=$(sed -n 's/^#define DREAMOS_EXT_API_VERSION "\(.*\)"$/\1/p' "$HDR")
API_PC=$(pkg-config --variable=apiversion dreamos)
[ -n "$API_HDR" ] && [ "$API_HDR" = "$API_PC" ] ||
	fail "API version: header '$API_HDR', dreamos.pc '$API_PC'"
ok "pkg-config --cflags dreamos points into the installed tree (API $API_PC)"

# Build the example where nothing of the source tree is reachable.
cp -R "$EXAMPLE" "$T/hello" || fail "cp example"
(cd "$T/hello" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $MAKE_CMD CC="$CC_CMD" \
	CFLAGS="-O2 -g -Werror") >"$T/build.log" 2>&1 ||
	{ cat "$T/build.log" >&2; fail "the example does not build"; }
[ -f "$T/hello/hello.so" ] || fail "no hello.so"
grep -q -- "-I$DEST" "$T/build.log" || fail "the build did not use the installed header"
ok "the example builds out of tree with its Makefile and pkg-config"

# Load it into dreamos.
cat >"$T/dreamos.yaml" <<EOF
bridge:
  enabled: false
extensions:
  dir: $T/hello
  load: [hello]
  hello:
    name: captain
EOF
start_headless --config "$T/dreamos.yaml"
out=$(ctl hello 2>&1) || fail "hello: $out"
echo "$out" | grep -q 'Hello, captain! (greeting #1' || fail "hello said: $out"
out=$(ctl hello crew --shout 2>&1) || fail "hello --shout: $out"
echo "$out" | grep -q 'HELLO, crew!!! (greeting #2' || fail "hello --shout said: $out"
ok "the example's command answers ($out)"

ctl agent spawn echo1 --type echo >/dev/null || fail "agent spawn echo1 --type echo"
ctl send echo1 ping >/dev/null || fail "send echo1"
i=0
until ctl history --json 2>/dev/null | "$PY" -c "import json,sys
j=json.load(sys.stdin)
rows=j if isinstance(j,list) else j.get('messages',[])
sys.exit(0 if any(r.get('from')=='echo1' and 'ping' in json.dumps(r.get('body')) for r in rows) else 1)"; do
	i=$((i + 1))
	[ $i -lt 100 ] || fail "no echo from echo1: $(ctl history 2>&1 | tail -n 5)"
	sleep 0.05
done
ok "its agent type works: echo1 sent the message back"

ctl quit >/dev/null 2>&1
wait_exit "$PID" 10
[ "$RC" = 0 ] || fail "dreamos exited with $RC"
grep -q 'Sanitizer\|runtime error' "$T/headless.err" && fail "sanitizer report"
ok "clean shutdown"
