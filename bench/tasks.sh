#!/bin/sh
# bench/tasks.sh — the task cycle benchmark (bench/tasks.py): Dream.OS's
# submit → assign → done with N tiny agents against beanstalkd's
# put → reserve → delete with N workers, in the same run.
#
# Builds what it needs in a scratch directory, out of the source tree: the
# tiny agent (cc -O2) and, unless DREAMOS names a binary to use, an
# optimised dreamos (configure with the default -g -O2, no --enable-debug).
# Arguments are passed to bench/tasks.py (e.g. --workers 8 --tasks 50000).
#
# Environment: DREAMOS (a dreamos binary: skip its build), CC (default cc),
# BENCH_TMP (scratch directory, kept; default a new /tmp/dreamos-taskbench.XXXXXX,
# removed at the end), PYTHON (default python3).
# Needs: a C compiler, python3, and beanstalkd (apt-get install beanstalkd).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
CC=${CC:-cc}
PYTHON=${PYTHON:-python3}

if ! command -v beanstalkd >/dev/null 2>&1; then
	echo "bench: beanstalkd is missing (apt-get install beanstalkd)" >&2
	exit 1
fi
if [ -n "${BENCH_TMP:-}" ]; then
	tmp=$BENCH_TMP
	mkdir -p "$tmp"
else
	tmp=$(mktemp -d /tmp/dreamos-taskbench.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	trap 'exit 130' INT TERM
fi

echo "bench: building the tiny agent and the beanstalkd worker ($CC -O2)"
"$CC" -O2 -o "$tmp/tiny-agent" "$here/tiny-agent.c"
"$CC" -O2 -o "$tmp/beans-worker" "$here/beans-worker.c"

if [ -n "${DREAMOS:-}" ]; then
	dreamos=$DREAMOS
	echo "bench: using DREAMOS=$dreamos"
else
	echo "bench: building an optimised dreamos in $tmp/build (configure; make dreamos)"
	if [ ! -x "$top/configure" ]; then
		echo "bench: $top/configure is missing: run ./bootstrap first, or set DREAMOS" >&2
		exit 1
	fi
	mkdir -p "$tmp/build"
	if ! (cd "$tmp/build" && "$top/configure" --quiet >configure.log 2>&1 &&
		make -j"$(nproc 2>/dev/null || echo 2)" dreamos >make.log 2>&1); then
		echo "bench: the build failed; the end of its log:" >&2
		tail -n 20 "$tmp/build/make.log" "$tmp/build/configure.log" 2>/dev/null >&2
		exit 1
	fi
	dreamos=$tmp/build/dreamos
fi
# A private copy, so that a rebuild of the tree during the run changes nothing.
cp "$dreamos" "$tmp/dreamos"

echo "bench: tasks (bench/tasks.py)"
"$PYTHON" "$here/tasks.py" --dreamos "$tmp/dreamos" --agent "$tmp/tiny-agent" \
	--beans-worker "$tmp/beans-worker" \
	--tmp "$tmp/tasks" "$@"
