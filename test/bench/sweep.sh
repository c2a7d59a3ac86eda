#!/bin/bash
# The sweep benchmark: how much faster one event loop sweeps many hosts
# than probing them one at a time, how close it comes to the machine's TLS
# handshake rate, and whether a backend's memory and descriptors stay put.
#
#   sudo bash test/bench/sweep.sh [--hosts N] [--key rsa2048|ec256] [--sample N] [--full] ...
#   sudo bash test/bench/sweep.sh --before COMMIT [--cpu-only] ...
#
# Builds and installs appguard, then runs test/bench/sweep/bench.pl (its
# options are described there) as the postgres user in a temporary copy
# of the tree, against real servers on loopback (AG_NET, default 127.77).
# Prints each figure as it is measured, then a table of ratios, all
# measured side by side in this one run.  Takes about four minutes.
# Not a test: it asserts nothing; read the figures.
#
# --before COMMIT: also measure COMMIT's build in the CPU-bound rounds,
# interleaved with the working tree's, each in its own throwaway cluster on
# the same servers, and report the backend CPU per host of both and their
# ratio.  COMMIT is built in a temporary directory and installed (DESTDIR)
# into a copy of the PostgreSQL installation there: PostgreSQL finds its
# library and share directories relative to its binaries, so that cluster
# loads COMMIT's appguard while the other loads the working tree's, and
# nothing of the machine's installation is touched for it.
# --cpu-only: only the CPU-bound rounds (no latency-bound, memory or
# descriptor stage).
#
# Root only; it installs the working tree's build, so run it under the
# machine's install lock:
#   flock -o /tmp/appguard-install.lock bash test/bench/sweep.sh ...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
if [ "$(id -u)" != 0 ]; then
	echo "sweep.sh: run me as root (I install packages and switch to the postgres user)" >&2
	exit 2
fi
bash "$ROOT/test/install-deps.sh" >/dev/null

# --before COMMIT is ours; everything else goes to bench.pl
BEFORE=
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--before) BEFORE=$2; shift 2 ;;
	--before=*) BEFORE=${1#--before=}; shift ;;
	*) args+=("$1"); shift ;;
	esac
done

cd "$ROOT"
make -s PG_CONFIG="$PG_CONFIG" WERROR=1
make -s PG_CONFIG="$PG_CONFIG" install

WORK=$(mktemp -d /tmp/appguard-sweep-bench.XXXXXX)
trap 'if [ "${ok:-0}" = 1 ]; then rm -rf "$WORK"; else echo "sweep.sh: failed; logs kept in $WORK/tree/tmp_check/log" >&2; fi' EXIT

# A copy of PostgreSQL's installation under $1 (binaries copied, library
# and share files linked) with appguard built from commit $2 installed in it
relocated_install() {
	local dest=$1 rev=$2 src=$WORK/before-src d
	mkdir -p "$src"
	git -C "$ROOT" archive --format=tar "$rev" | tar -x -C "$src"
	make -s -C "$src" PG_CONFIG="$PG_CONFIG" WERROR=1 >"$WORK/before-build.log" 2>&1 ||
		{ cat "$WORK/before-build.log" >&2; exit 1; }
	mkdir -p "$dest$("$PG_CONFIG" --bindir)"
	cp -a "$("$PG_CONFIG" --bindir)/." "$dest$("$PG_CONFIG" --bindir)/"
	for d in "$("$PG_CONFIG" --pkglibdir)" "$("$PG_CONFIG" --sharedir)"; do
		mkdir -p "$dest$d"
		cp -as "$d/." "$dest$d/"
	done
	# the links to the machine's appguard go, so that the install below
	# writes files of its own rather than through them
	find "$dest" -name 'appguard*' -prune -exec rm -rf {} +
	make -s -C "$src" PG_CONFIG="$PG_CONFIG" DESTDIR="$dest" install >>"$WORK/before-build.log" 2>&1 ||
		{ cat "$WORK/before-build.log" >&2; exit 1; }
	echo "$dest$(dirname "$("$PG_CONFIG" --bindir)")"
}
if [ -n "$BEFORE" ]; then
	label=$(git -C "$ROOT" rev-parse --short "$BEFORE^{commit}")
	inst=$(relocated_install "$WORK/before-pg" "$BEFORE")
	args+=(--before-install "$inst" --before-label "$label")
fi

rsync -a --exclude .git --exclude tmp_check "$ROOT/" "$WORK/tree/"
chown -R postgres:postgres "$WORK"
chmod 755 "$WORK"
cd "$WORK/tree"
runuser -u postgres -- env \
	PATH="$("$PG_CONFIG" --bindir):$PATH" \
	PERL5LIB="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/perl" \
	TESTDIR="$WORK/tree" PG_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
	perl test/bench/sweep/bench.pl ${args[@]+"${args[@]}"}
ok=1
