#!/bin/bash
# Before and after in one run: the token-endpoint benchmark
# (test/bench/lifecycle.sh) of an earlier commit and of the working tree
# (or of a second commit), on the same machine, rounds interleaved.
#
#   sudo bash test/bench/compare.sh [BEFORE [AFTER]]
#
# BEFORE: a commit (default 9bfba71, the commit before the one grant model
# of issue 11); AFTER: a commit, or the working tree (default: the working
# tree, uncommitted changes included).  Each side is copied into a
# temporary directory (git archive; the working tree through git ls-files)
# and built there (-Werror).  Round r runs, for each side, that side's own
# test/bench/lifecycle.sh with AG_BENCH_ROUNDS=1 (its scripts fit its
# schema): it installs that side's build, starts a throwaway cluster, loads
# its data and measures.  The order of the sides alternates (before, after;
# after, before; ...), so that a slow drift of the machine weighs on both.
#
# It prints, per measure, the median (and range) over the rounds of each
# side's absolute figures (latency in ms of the transaction with and
# without appguard, and the TPS it makes on one connection; the fan-out's
# backend CPU time and wall clock) and the after/before ratio of the
# medians, then each side's own side-by-side ratios (measured within one
# pgbench run or one psql session), and every run's per-round lines.
# Absolute timings on a shared machine are noisy: the side-by-side ratios,
# measured in one run, are what count.
#
# Root only (it installs appguard), under the lock every install on this
# machine takes, /tmp/appguard-install.lock, for its whole duration: it
# takes it itself unless it inherited it (flock FILE bash compare.sh).
# The working tree's build is installed again at the end.
#
# Settings: AG_BENCH_ROUNDS (3), and those of lifecycle.sh, passed on
# (AG_BENCH_SECONDS, AG_BENCH_CLIENTS, AG_BENCH_TOKENS, AG_BENCH_CALLS,
# AG_BENCH_PORT); AG_KEEP=1 keeps the work directory with every log.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOCK=/tmp/appguard-install.lock
BEFORE=${1:-9bfba71}
AFTER=${2:-}
ROUNDS=${AG_BENCH_ROUNDS:-3}
export AG_BENCH_CLIENTS=${AG_BENCH_CLIENTS:-1}

if [ "$(id -u)" != 0 ]; then
	echo "compare.sh: run it as root (it builds and installs each side)" >&2
	exit 2
fi

# The install lock, held for the whole run: taken here unless a file
# descriptor inherited from the caller holds it already.
holds_lock() {
	local fd
	for fd in /proc/$$/fd/*; do
		[ "$(readlink "$fd" 2>/dev/null)" = "$LOCK" ] && return 0
	done
	return 1
}
if ! holds_lock; then
	exec 9>>"$LOCK"
	echo "compare.sh: waiting for $LOCK" >&2
	flock 9
fi

START=$(date +%s)
WORKDIR=$(mktemp -d /tmp/appguard-compare.XXXXXX)
cleanup() {
	if [ "${AG_KEEP:-0}" = 1 ]; then echo "compare.sh: kept $WORKDIR" >&2; else rm -rf "$WORKDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# side NAME COMMIT|'': the source of one side in $WORKDIR/NAME
side() {
	local name=$1 rev=$2 dir=$WORKDIR/$1
	mkdir -p "$dir"
	if [ -n "$rev" ]; then
		git -C "$ROOT" archive --format=tar "$rev" | tar -x -C "$dir"
		git -C "$ROOT" rev-parse --short "$rev^{commit}"
	else
		(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
			tar --null -T - --ignore-failed-read -c 2>/dev/null) | tar -x -C "$dir"
		echo "working tree ($(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo '+changes'))"
	fi
}
before_label=$(side before "$BEFORE")
after_label=$(side after "$AFTER")
for s in before after; do
	if [ ! -f "$WORKDIR/$s/test/bench/lifecycle.sh" ]; then
		echo "compare.sh: $s has no test/bench/lifecycle.sh" >&2
		exit 2
	fi
	echo "compare.sh: building $s" >&2
	make -s -C "$WORKDIR/$s" WERROR=1 >"$WORKDIR/build-$s.log" 2>&1 ||
		{ cat "$WORKDIR/build-$s.log" >&2; exit 1; }
done

mkdir -p "$WORKDIR/log"
run() {	# run SIDE ROUND
	local t0=$(date +%s)
	echo "compare.sh: round $2, $1 ($(date +%H:%M:%S))" >&2
	if ! AG_BENCH_ROUNDS=1 bash "$WORKDIR/$1/test/bench/lifecycle.sh" \
		>"$WORKDIR/log/$1.$2.out" 2>"$WORKDIR/log/$1.$2.err"; then
		echo "compare.sh: $1's lifecycle.sh failed in round $2:" >&2
		tail -20 "$WORKDIR/log/$1.$2.err" >&2
		exit 1
	fi
	echo "$1 $2 $(($(date +%s) - t0))" >>"$WORKDIR/log/durations"
}
for r in $(seq 1 "$ROUNDS"); do
	if [ $((r % 2)) = 1 ]; then run before "$r"; run after "$r"; else run after "$r"; run before "$r"; fi
done
# leave the working tree's (or AFTER's) build installed
make -s -C "$WORKDIR/after" install >/dev/null

ELAPSED=$(($(date +%s) - START))
export BEFORE_LABEL=$before_label AFTER_LABEL=$after_label ROUNDS ELAPSED
export PGVERSION=$(pg_config --version) NPROC=$(nproc)
perl "$HERE/compare_report.pl" "$WORKDIR/log"
