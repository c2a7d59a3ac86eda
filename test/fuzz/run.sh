#!/bin/bash
# Build the fuzzers, make their seed corpora and run each for SECONDS.
#   test/fuzz/run.sh [SECONDS] [HARNESS ...]     (default 5 s; dns tls host drift)
# The short run is part of the test suite (test/t/063_fuzz.pl); a long one:
#   test/fuzz/run.sh 3600
# Corpora grow in test/fuzz/corpus-NAME/ (kept between runs, not in git);
# a crash leaves test/fuzz/build/crash-NAME-* and fails the run.  Prints,
# per harness, "fuzz NAME: E executions, C crashes, corpus K inputs" and
# at the end "fuzz: P passed, F failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SECONDS_EACH=${1:-5}
shift || true
HARNESSES=${*:-dns tls host drift}
BUILD=$HERE/build

mkdir -p "$BUILD"
if ! "$HERE/build.sh" "$BUILD" >"$BUILD/build.log" 2>&1; then
	cat "$BUILD/build.log" >&2
	echo "fuzz: 0 passed, 1 failed"
	exit 1
fi
mkdir -p "$BUILD/seeds"
/usr/bin/python3 "$HERE/gen_seeds.py" "$BUILD/seeds" || exit 1

passed=0
failed=0
for h in $HARNESSES; do
	corpus=$HERE/corpus-$h
	mkdir -p "$corpus"
	log=$BUILD/fuzz_$h.log
	# seeds first (read-only second corpus dir), new inputs go to $corpus
	"$BUILD/fuzz_$h" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
		-timeout=10 -rss_limit_mb=2048 -max_len=1048576 \
		-artifact_prefix="$BUILD/crash-$h-" "$corpus" "$BUILD/seeds/corpus-$h" >"$log" 2>&1
	rc=$?
	execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
	crashes=$(grep -cE '^==[0-9]+==ERROR|runtime error|invariant broken|^SUMMARY: ' "$log")
	if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then
		crashes=1		# died some other way: count it
	fi
	echo "fuzz $h: ${execs:-0} executions, $crashes crashes, corpus $(ls "$corpus" | wc -l) inputs, ${SECONDS_EACH} s"
	if [ "$crashes" != 0 ] || [ -z "$execs" ] || [ "$execs" = 0 ]; then
		failed=$((failed + 1))
		grep -E -A 25 '^==[0-9]+==ERROR|runtime error|invariant broken' "$log" | head -60 >&2
		ls "$BUILD"/crash-"$h"-* 2>/dev/null >&2
	else
		passed=$((passed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
