#!/bin/sh
# bench/crash-consistency.sh — the long crash-consistency loop (the short one
# is tests/reliability/crash-consistency.sh, run by make check).
#
# Usage: bench/crash-consistency.sh [ITERATIONS] [crashloop.py options...]
# ITERATIONS defaults to 200.  Options go to tests/reliability/crashloop.py
# (--seed S, --messages M, --tasks-per-iter K, --keep, --json...).
# DREAMOS names the binary (default: _build/dreamos or ./dreamos of the tree,
# else dreamos in PATH; a private copy is run, so that a rebuild during the
# run changes nothing); PYTHON3 the interpreter.
# Exit status 0 if nothing was lost, 1 otherwise, 2 on bad usage.
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
if [ -z "${DREAMOS:-}" ]; then
	for d in "$top/_build/dreamos" "$top/dreamos"; do
		if [ -x "$d" ]; then DREAMOS=$d; break; fi
	done
	[ -n "${DREAMOS:-}" ] || DREAMOS=$(command -v dreamos) ||
		{ echo "crash-consistency: no dreamos binary: set DREAMOS" >&2; exit 2; }
fi
N=200
case ${1:-} in
'' | -*) ;;
*[!0-9]*) echo "crash-consistency: ITERATIONS must be a number, got '$1'" >&2; exit 2 ;;
*) N=$1; shift ;;
esac
copy=$(mktemp "${TMPDIR:-/tmp}/dreamos-bin.XXXXXX") || exit 1
trap 'rm -f "$copy"' EXIT
cp "$DREAMOS" "$copy" && chmod +x "$copy" || exit 1
DREAMOS=$copy DREAMOS_SHARE=${DREAMOS_SHARE:-$top/share} top_srcdir=$top \
	"${PYTHON3:-python3}" "$top/tests/reliability/crashloop.py" --iterations "$N" "$@"
