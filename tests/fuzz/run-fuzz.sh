#!/bin/sh
# run-fuzz.sh — runs libFuzzer targets one after the other, each for a bounded
# time on a scratch copy of its seed corpus (the tree is never modified), and
# prints one summary line per target.  Exit status 1 if any target found a
# crash, a leak, a timeout or ran out of memory; the input that did it is
# kept in $FUZZ_ARTIFACTS (default tests/fuzz/artifacts in the build tree).
#
# usage: run-fuzz.sh [-s SECONDS] [-d FUZZDIR] [-k] BINARY...
#   -s SECONDS  time per target (default 60)
#   -d FUZZDIR  where corpus/, dict/ and *.options live (default: this
#               script's directory)
#   -k          keep the scratch corpora (their path is printed)
# A target tests/fuzz/fuzz-NAME takes seeds from FUZZDIR/corpus/NAME/, the
# dictionary FUZZDIR/dict/NAME.dict and extra flags from
# FUZZDIR/NAME.options, and UBSan suppressions (known bugs reported
# elsewhere) from FUZZDIR/NAME.ubsan-supp, each if present.  FUZZ_FLAGS adds
# flags to every run.
set -u

seconds=60
dir=$(dirname "$0")
keep=no
while getopts s:d:k opt; do
	case $opt in
	s) seconds=$OPTARG ;;
	d) dir=$OPTARG ;;
	k) keep=yes ;;
	*) echo "usage: $0 [-s SECONDS] [-d FUZZDIR] [-k] BINARY..." >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "$0: no fuzz targets given" >&2; exit 2; }

artifacts=${FUZZ_ARTIFACTS:-tests/fuzz/artifacts}
mkdir -p "$artifacts"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/dreamos-fuzz.XXXXXX") || exit 1
[ $keep = yes ] || trap 'rm -rf "$scratch"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
summary=""
for bin in "$@"; do
	base=$(basename "$bin")
	name=${base#fuzz-}
	corpus=$scratch/$name
	mkdir -p "$corpus"
	[ -d "$dir/corpus/$name" ] && cp "$dir/corpus/$name"/* "$corpus"/ 2>/dev/null
	seeds=$(ls "$corpus" | wc -l)
	set -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$artifacts/$base-"
	[ -f "$dir/dict/$name.dict" ] && set -- "$@" -dict="$dir/dict/$name.dict"
	[ -f "$dir/$name.options" ] && set -- "$@" $(grep -v '^#' "$dir/$name.options")
	log=$scratch/$base.log
	echo "=== $base: ${seconds}s, $seeds seeds ==="
	ubsan=$UBSAN_OPTIONS
	[ -f "$dir/$name.ubsan-supp" ] && ubsan="$ubsan:suppressions=$dir/$name.ubsan-supp"
	# shellcheck disable=SC2086
	# TMPDIR: whatever a target leaves there (fuzz-cmd's runtime) goes with the scratch.
	TMPDIR=$scratch UBSAN_OPTIONS=$ubsan "$bin" "$@" ${FUZZ_FLAGS:-} "$corpus" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	cov=$(grep -E '^#[0-9]+' "$log" | sed -n 's/.* cov: \([0-9]*\).*/\1/p' | tail -n 1)
	ft=$(grep -E '^#[0-9]+' "$log" | sed -n 's/.* ft: \([0-9]*\).*/\1/p' | tail -n 1)
	files=$(ls "$corpus" | wc -l)
	if [ $rc -eq 0 ]; then
		result=ok
	else
		result="FAILED (exit $rc)"
		failed=1
		grep -E 'ERROR: |SUMMARY: |runtime error|Test unit written' "$log" | head -n 20
		tail -n 30 "$log"
	fi
	line=$(printf '%-14s %5ss %10s execs %7s/s  cov %5s  ft %6s  corpus %5s  %s' \
		"$base" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$files" "$result")
	echo "$line"
	summary="$summary$line
"
done
echo "=== fuzzing summary ==="
printf '%s' "$summary"
[ $keep = yes ] && echo "scratch corpora and logs kept in $scratch"
exit $failed
