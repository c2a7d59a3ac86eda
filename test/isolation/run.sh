#!/bin/bash
# Isolation specs of the lifecycle (pg_isolation_regress): a drifting
# snapshot's fan-out, sweeps and the breaker, refresh checks, re-approval
# and appguard_protect, run concurrently.  Checks: no deadlock, no
# suspended grant ever allowed to refresh, no suspension lost.
#   test/isolation/run.sh [spec ...]
# Connects with the libpq environment (PGHOST, PGPORT, PGUSER: a superuser)
# and recreates the database $AG_ISOLATION_DB (default appguard_isolation)
# with CREATE EXTENSION $AG_EXTENSION (default appguard).  Results go to
# $AG_OUTPUT (default a temporary directory), diffs are printed on failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DB=${AG_ISOLATION_DB:-appguard_isolation}
EXT=${AG_EXTENSION:-appguard}
OUT=${AG_OUTPUT:-$(mktemp -d /tmp/appguard-isolation.XXXXXX)}
BIN=$(pg_config --bindir)
REGRESS=$(pg_config --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress
if [ $# -gt 0 ]; then
	specs="$*"
else
	specs=$(cd "$HERE/specs" && ls -- *.spec | sed 's/\.spec$//')
fi
"$BIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres \
	-c "DROP DATABASE IF EXISTS \"$DB\"" -c "CREATE DATABASE \"$DB\""
"$BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" \
	-c "CREATE EXTENSION \"$EXT\"" -f "$HERE/../../sql/lifecycle_helpers.inc" -f "$HERE/setup.sql" >/dev/null
mkdir -p "$OUT"
set +e
"$REGRESS" --inputdir="$HERE" --outputdir="$OUT" --use-existing --dbname="$DB" $specs
rc=$?
set -e
if [ $rc != 0 ] && [ -s "$OUT/regression.diffs" ]; then
	cat "$OUT/regression.diffs"
fi
"$BIN/psql" -X -q -d postgres -c "DROP DATABASE IF EXISTS \"$DB\"" || true
exit $rc
