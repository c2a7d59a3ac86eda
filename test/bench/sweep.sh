#!/bin/bash
# The sweep benchmark: how much faster one event loop sweeps many hosts
# than probing them one at a time, how close it comes to the machine's TLS
# handshake rate, and whether a backend's memory and descriptors stay put.
#
#   sudo bash test/bench/sweep.sh [--hosts N] [--key rsa2048|ec256] [--sample N] [--full] ...
#
# Builds and installs appguard, then runs test/bench/sweep/bench.pl (its
# options are described there) as the postgres user in a temporary copy
# of the tree, against real servers on loopback (AG_NET, default 127.77).
# Prints each figure as it is measured, then a table of ratios, all
# measured side by side in this one run.  Takes about four minutes.
# Not a test: it asserts nothing; read the figures.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
if [ "$(id -u)" != 0 ]; then
	echo "sweep.sh: run me as root (I install packages and switch to the postgres user)" >&2
	exit 2
fi
bash "$ROOT/test/install-deps.sh" >/dev/null

cd "$ROOT"
make -s PG_CONFIG="$PG_CONFIG" WERROR=1
make -s PG_CONFIG="$PG_CONFIG" install

WORK=$(mktemp -d /tmp/appguard-sweep-bench.XXXXXX)
trap 'if [ "${ok:-0}" = 1 ]; then rm -rf "$WORK"; else echo "sweep.sh: failed; logs kept in $WORK/tree/tmp_check/log" >&2; fi' EXIT
rsync -a --exclude .git --exclude tmp_check "$ROOT/" "$WORK/tree/"
chown -R postgres:postgres "$WORK"
chmod 755 "$WORK"
cd "$WORK/tree"
runuser -u postgres -- env \
	PATH="$("$PG_CONFIG" --bindir):$PATH" \
	PERL5LIB="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/perl" \
	TESTDIR="$WORK/tree" PG_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
	perl test/bench/sweep/bench.pl "$@"
ok=1
