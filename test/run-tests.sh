#!/bin/bash
# Build appguard with warnings as errors and run every test suite:
#   pg_regress (sql/, expected/)         the SQL surface, no network
#   isolation (test/isolation/)          concurrency, several sessions
#                                        (both by make installcheck)
#   upgrade (test/upgrade.sh)            the last release in RELEASES upgraded
#                                        to the working tree, compared with a
#                                        fresh install (or a dump and restore)
#   TAP (test/t/*.pl)                    real DNS and TLS servers on loopback
#   memory safety (test/sanitize.sh)     the server under valgrind memcheck,
#                                        appguard built with UBSan: every
#                                        pg_regress test and the snapshot,
#                                        lifecycle and sweep TAP tests of its
#                                        default set (about 10 minutes)
# Run as root on Debian 12; the servers and clusters run as the postgres
# user in a temporary directory that is removed at the end.
#   AG_KEEP=1      keep the temporary directory (logs, clusters' data)
#   AG_TAP="..."   run only these TAP files (e.g. "test/t/010_snapshot_tls.pl")
#   AG_SANITIZE=0  leave the memory-safety stage out (reported as skipped)
#   AG_UPGRADE=0   leave the upgrade test out (reported as skipped)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "run-tests: run me as root (I install packages and switch to the postgres user)" >&2
	exit 2
fi
bash "$ROOT/test/install-deps.sh"
# Citus for test/t/080_citus.pl, from the vendored source (skipped when installed)
bash "$ROOT/test/citus/build.sh"

cd "$ROOT"
make -s clean
make -s WERROR=1
make -s install

WORK=$(mktemp -d /tmp/appguard-test.XXXXXX)
PORT=${AG_PGPORT:-55400}
rsync -a --exclude .git "$ROOT/" "$WORK/tree/"
chown -R postgres:postgres "$WORK"
chmod 755 "$WORK"

as_postgres() {
	runuser -u postgres -- env PATH="$(pg_config --bindir):$PATH" "$@"
}
cleanup() {
	as_postgres bash "$WORK/tree/test/cluster.sh" stop "$WORK/pg" || true
	if [ "${AG_KEEP:-0}" = 1 ]; then
		echo "run-tests: kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

passed=0
failed=0
count() {		# count SUITE PASSED FAILED
	echo "run-tests: $1: $2 passed, $3 failed"
	passed=$((passed + $2))
	failed=$((failed + $3))
}

# ---- pg_regress and isolation: make installcheck against one throwaway
# cluster, each suite in a make of its own so that both always run
as_postgres bash "$WORK/tree/test/cluster.sh" start "$WORK/pg" "$PORT"
cd "$WORK/tree"
suite() {		# suite NAME LOG DIFFS MAKE-ARGS...: make installcheck, counted
	local name=$1 log=$2 diffs=$3 rc ok bad
	shift 3
	set +e
	as_postgres make -s installcheck PGHOST="$WORK/pg" PGPORT="$PORT" "$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	set -e
	ok=$(grep -cE '^(ok|test) .* \.\.\. ok|^ok [0-9]+ ' "$log" || true)
	bad=$(grep -cE '\.\.\. FAILED|^not ok ' "$log" || true)
	if [ "$rc" != 0 ] && [ "$bad" = 0 ]; then
		bad=1		# make failed before any test could fail
	fi
	count "$name" "$ok" "$bad"
	if [ -s "$diffs" ]; then
		cat "$diffs"
	fi
}
suite "pg_regress" "$WORK/regress.log" "$WORK/tree/regression.diffs" ISOLATION=
suite "isolation" "$WORK/isolation.log" "$WORK/tree/output_iso/regression.diffs" REGRESS=
# the stages below start their own clusters
as_postgres bash "$WORK/tree/test/cluster.sh" stop "$WORK/pg" || true
cd "$ROOT"

# ---- upgrade: builds the last release and the working tree into a private
# copy of PostgreSQL and runs its own cluster
if [ "${AG_UPGRADE:-1}" = 0 ]; then
	echo "run-tests: upgrade: skipped (AG_UPGRADE=0)"
else
	set +e
	bash "$ROOT/test/upgrade.sh" </dev/null 2>&1 | tee "$WORK/upgrade.log"
	upgrade_rc=${PIPESTATUS[0]}
	set -e
	line=$(grep -E '^upgrade: [0-9]+ passed, [0-9]+ failed$' "$WORK/upgrade.log" | tail -1)
	ok=$(echo "$line" | sed -nE 's/^upgrade: ([0-9]+) passed.*/\1/p')
	bad=$(echo "$line" | sed -nE 's/.* ([0-9]+) failed$/\1/p')
	if [ "$upgrade_rc" != 0 ] && [ "${bad:-0}" = 0 ]; then
		bad=1		# it failed before it could count
	fi
	count "upgrade" "${ok:-0}" "${bad:-0}"
fi
cd "$WORK/tree"

# ---- TAP: each test starts its own servers and clusters ----
set +e
as_postgres make -s prove_installcheck PROVE_FLAGS="-I ./test/perl" \
	${AG_TAP:+PROVE_TESTS="$AG_TAP"} 2>&1 | tee "$WORK/tap.log"
tap_rc=${PIPESTATUS[0]}
set -e
tests=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$WORK/tap.log" | tail -1)
tap_failed=$(grep -cE '^not ok ' "$WORK/tap.log" || true)
if [ "$tap_rc" != 0 ] || ! grep -q '^Result: PASS' "$WORK/tap.log"; then
	tap_failed=$((tap_failed > 0 ? tap_failed : 1))
fi
count "TAP" $(( ${tests:-0} - tap_failed )) "$tap_failed"
# a TAP file that skipped itself (a package or the vendored Citus missing)
# is said here, not hidden in the count
skipped=$(sed -nE 's/^(test\/t\/[^ ]+\.pl) \.+ skipped: (.*)/\1 (\2)/p' "$WORK/tap.log")
if [ -n "$skipped" ]; then
	echo "run-tests: TAP: $(echo "$skipped" | wc -l) file(s) skipped:"
	echo "$skipped" | sed 's/^/run-tests:   /'
fi

# ---- memory safety: test/sanitize.sh's default set (it switches to the
# postgres user itself and stops every server it started, on failure and
# interrupt too).  It runs in the background, so that an interrupt reaches
# the trap at once and is passed on to it.
if [ "${AG_SANITIZE:-1}" = 0 ]; then
	echo "run-tests: memory safety: skipped (AG_SANITIZE=0)"
else
	sanitize_pid=
	stop_sanitize() {
		trap - INT TERM
		[ -n "$sanitize_pid" ] && kill -TERM "$sanitize_pid" 2>/dev/null && wait "$sanitize_pid"
		exit 130
	}
	trap stop_sanitize INT TERM
	set +e
	: >"$WORK/sanitize.log"		# (created before tail follows it)
	bash "$ROOT/test/sanitize.sh" </dev/null >>"$WORK/sanitize.log" 2>&1 &
	sanitize_pid=$!
	tail -n +1 -f --pid="$sanitize_pid" "$WORK/sanitize.log" &
	tail_pid=$!
	wait "$sanitize_pid"
	sanitize_rc=$?
	sanitize_pid=
	wait "$tail_pid"
	set -e
	trap - INT TERM
	line=$(grep -E '^sanitize: [0-9]+ passed, [0-9]+ failed$' "$WORK/sanitize.log" | tail -1)
	ok=$(echo "$line" | sed -nE 's/^sanitize: ([0-9]+) passed.*/\1/p')
	bad=$(echo "$line" | sed -nE 's/.* ([0-9]+) failed$/\1/p')
	if [ "$sanitize_rc" != 0 ] && [ "${bad:-0}" = 0 ]; then
		bad=1		# it failed before it could count
	fi
	count "memory safety (valgrind, UBSan)" "${ok:-0}" "${bad:-0}"
fi

echo "appguard: $passed passed, $failed failed${skipped:+, $(echo "$skipped" | wc -l) TAP file(s) skipped}"
[ "$failed" = 0 ]
