#!/bin/bash
# node-oidc-provider's token endpoint (the example server of
# test/oidc-provider) with appguard vs without: median latency of the
# refresh and of the code exchange, and their ratios, measured side by side
# in one run (not a test: it asserts nothing but that every request
# succeeded).
#
#   sudo bash test/bench/oidc.sh
#
# As root it installs the packages and node_modules if missing
# (test/install-deps.sh), builds and installs appguard, and runs everything
# else as the postgres user; as any other user it expects them installed.
# It starts a throwaway cluster (test/cluster.sh), a test TLS host and DNS
# zone for the app (AppGuard::TestEnv, on $AG_NET.x.y, default 127.77) and
# four servers on $AG_NET.250.2, ports 4601 and 4604 (no appguard: the
# second one is the control, what two identical servers measure apart),
# 4603 (table protected, token endpoint unchanged) and 4602 (table
# protected, refresh check in the token endpoint: the example as shipped),
# each with its own database (test/oidc-provider/bench.pl);
# test/oidc-provider/bench.js sends
# AG_BENCH_REQUESTS (300) code exchanges and refreshes to each, interleaved
# one by one.  AG_BENCH_PORT (55493) is the cluster's port; AG_KEEP=1 keeps
# the work directory.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQUESTS=${AG_BENCH_REQUESTS:-300}
PORT=${AG_BENCH_PORT:-55493}

if [ "$(id -u)" = 0 ]; then
	bash "$ROOT/test/install-deps.sh"
fi
. "$HERE/common.sh"
bench_workdir bench-oidc "$ROOT/test/perl" "$ROOT/test/env" "$ROOT/test/oidc-provider"

cd "$WORK"
as_pg env TMPDIR="$WORK" perl "$WORK/oidc-provider/bench.pl" --pghost "$WORK/pg" --pgport "$PORT" \
	--requests "$REQUESTS"
