#!/bin/sh
# run.sh — runs the Python agent SDK tests (tests/sdk/test_sdk.py) for
# `make check`, with ${PYTHON3:-python3}; top_srcdir (set by make check)
# defaults to the repository this script is in.  Exit 77 (skipped) if there
# is no python3.
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
export top_srcdir
PY=${PYTHON3:-python3}
if [ "$PY" = no ] || ! command -v "$PY" >/dev/null 2>&1; then
	echo "SKIP: python3 not found"
	exit 77
fi
exec "$PY" "$top_srcdir/tests/sdk/test_sdk.py"
