#!/bin/sh
# crash-consistency.sh — the short crash-consistency loop for make check:
# tests/reliability/crashloop.py with CRASH_ITERATIONS (default 5) kill -9s of
# the orchestrator amid messages and tasks, then a drain; fails on a lost
# message, a lost or twice-done task, a failed verify or integrity check, or
# ids that went back.  CRASH_SEED repeats a run (the seed is printed).
# bench/crash-consistency.sh is the long version.
: "${DREAMOS:?DREAMOS must point at the dreamos binary (make check sets it)}"
PY=${PYTHON3:-python3}
exec "$PY" "${top_srcdir:-.}/tests/reliability/crashloop.py" \
	--iterations "${CRASH_ITERATIONS:-5}" ${CRASH_SEED:+--seed "$CRASH_SEED"}
