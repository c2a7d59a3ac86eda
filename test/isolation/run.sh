#!/bin/bash
# Isolation specs of the lifecycle (pg_isolation_regress): a drifting
# snapshot's fan-out, sweeps and the breaker, refresh checks, re-approval
# and appguard_protect, run concurrently.  Checks: no deadlock, no
# suspended grant ever allowed to refresh, no suspension lost.
#   test/isolation/run.sh [spec ...]
# The isolation half of "make installcheck" (see the Makefile): connects
# with the libpq environment (PGHOST, PGPORT, PGUSER: a superuser), remakes
# the database isolation_regression with the extension and the helpers,
# writes results to output_iso/ and prints the diffs on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
set +e
make -s installcheck REGRESS= ${1:+ISOLATION="$*"}
rc=$?
set -e
if [ $rc != 0 ] && [ -s output_iso/regression.diffs ]; then
	cat output_iso/regression.diffs
fi
exit $rc
