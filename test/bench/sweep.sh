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
# The working tree is built in place and installed (DESTDIR) into a copy
# of the PostgreSQL installation in a temporary directory, not into the
# machine's: PostgreSQL finds its library and share directories relative
# to its binaries, so the benchmark's cluster loads this build whatever
# the machine's installation holds, and installs by others cannot change
# it halfway.
#
# --before COMMIT: also measure COMMIT's build in the CPU-bound rounds,
# interleaved with the working tree's, each in its own throwaway cluster
# (from its own copy) on the same servers, and report the backend CPU per
# host of both and their ratio.  COMMIT is taken with git archive.
# --cpu-only: only the CPU-bound rounds (no latency-bound, memory or
# descriptor stage).
#
# Root only (packages, the postgres user).  Its servers take AG_NET's
# loopback addresses (default 127.77), as the TAP tests' do: on a shared
# machine run it under the install lock the test commands take, or with
# an AG_NET of its own:
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

WORK=$(mktemp -d /tmp/appguard-sweep-bench.XXXXXX)
# AG_KEEP=1 (or AG_PERF, whose profiles need the binaries) keeps it
trap 'if [ "${ok:-0}" = 1 ] && [ -z "${AG_KEEP:-}${AG_PERF:-}" ]; then rm -rf "$WORK"; else echo "sweep.sh: kept $WORK" >&2; fi' EXIT

# A copy of PostgreSQL's installation under $1: binaries copied, library
# and share files linked.  PostgreSQL finds its library and share
# directories relative to its binaries, so a cluster started from the
# copy loads the appguard installed into it (DESTDIR), whatever the
# machine's installation holds.  Prints the copy's install path.
relocated_pg() {
	local dest=$1 d
	mkdir -p "$dest$("$PG_CONFIG" --bindir)"
	cp -a "$("$PG_CONFIG" --bindir)/." "$dest$("$PG_CONFIG" --bindir)/"
	for d in "$("$PG_CONFIG" --pkglibdir)" "$("$PG_CONFIG" --sharedir)"; do
		mkdir -p "$dest$d"
		cp -as "$d/." "$dest$d/"
	done
	# the links to the machine's appguard go, so that the install
	# writes files of its own rather than through them
	find "$dest" -name 'appguard*' -prune -exec rm -rf {} +
	# with AG_CALLGRIND=DIR in its environment, the server runs under
	# callgrind, counting the instructions of appguard_snapshot_many calls
	# only (bench.pl --callgrind); else it is the real binary
	local bin=$dest$("$PG_CONFIG" --bindir)
	mv "$bin/postgres" "$bin/postgres.real"
	cat >"$bin/postgres" <<'WRAP'
#!/bin/sh
if [ -n "$AG_CALLGRIND" ]; then
	case " $* " in
	*" -V "*|*" --version "*|*" -C "*|*" --describe-config "*|*" --boot "*|*" --single "*) ;;
	*) exec valgrind --tool=callgrind --collect-atstart=no --toggle-collect=appguard_snapshot_many \
		--callgrind-out-file="$AG_CALLGRIND/callgrind.out.%p" --log-file="$AG_CALLGRIND/vg.%p" \
		"$(dirname "$0")/postgres.real" "$@" ;;
	esac
fi
exec "$(dirname "$0")/postgres.real" "$@"
WRAP
	chmod 755 "$bin/postgres"
	echo "$dest$(dirname "$("$PG_CONFIG" --bindir)")"
}

# build the tree $1 (-Werror) and install it into a copy made by relocated_pg $2
build_into() {
	local src=$1 dest=$2 log=$WORK/build-$(basename "$2").log
	{ make -s -C "$src" PG_CONFIG="$PG_CONFIG" WERROR=1 &&
		make -s -C "$src" PG_CONFIG="$PG_CONFIG" DESTDIR="$dest" install; } >"$log" 2>&1 ||
		{ cat "$log" >&2; exit 1; }
}

inst=$(relocated_pg "$WORK/after-pg")
build_into "$ROOT" "$WORK/after-pg"
args+=(--install "$inst")
if [ -n "$BEFORE" ]; then
	label=$(git -C "$ROOT" rev-parse --short "$BEFORE^{commit}")
	mkdir -p "$WORK/before-src"
	git -C "$ROOT" archive --format=tar "$BEFORE" | tar -x -C "$WORK/before-src"
	inst=$(relocated_pg "$WORK/before-pg")
	build_into "$WORK/before-src" "$WORK/before-pg"
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
