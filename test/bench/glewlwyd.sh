#!/bin/bash
# Glewlwyd's token endpoint with its refresh-token table protected by
# appguard vs unprotected: median latency of each, and their ratio, measured
# side by side in one run (not a test: it asserts nothing but that every
# request succeeded).
#
#   sudo bash test/bench/glewlwyd.sh
#
# As root it installs glewlwyd if missing, builds and installs appguard,
# and runs everything else as the postgres user; as any other user it
# expects both installed.  It starts a throwaway cluster (test/cluster.sh),
# a test TLS host and DNS zone for the app (AppGuard::TestEnv, on
# $AG_NET.x.y, default 127.77) and two Glewlwyd instances on
# $AG_NET.250.1, ports 4593 (table left alone) and 4594 (table protected),
# each with its own database (test/glewlwyd/AppGuard/Glewlwyd.pm); then
# test/glewlwyd/bench.pl sends AG_BENCH_REQUESTS (300) refreshes and code
# exchanges to each, interleaved one by one, and prints the medians and
# their ratios.  AG_BENCH_PORT (55492) is the cluster's port; AG_KEEP=1
# keeps the work directory.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQUESTS=${AG_BENCH_REQUESTS:-300}
PORT=${AG_BENCH_PORT:-55492}

if [ "$(id -u)" = 0 ]; then
	dpkg-query -W -f='${Status}' glewlwyd 2>/dev/null | grep -q 'install ok installed' ||
		bash "$ROOT/test/install-deps.sh"
fi
. "$HERE/common.sh"
bench_workdir bench-glewlwyd "$ROOT/test/perl" "$ROOT/test/env" "$ROOT/test/glewlwyd"

cd "$WORK"
as_pg env TMPDIR="$WORK" perl "$WORK/glewlwyd/bench.pl" --pghost "$WORK/pg" --pgport "$PORT" \
	--requests "$REQUESTS"
