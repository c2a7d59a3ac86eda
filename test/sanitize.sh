#!/bin/bash
# Memory safety: the PostgreSQL server runs under valgrind memcheck (every
# process it forks, backends and background workers included, is checked)
# with appguard built with UndefinedBehaviorSanitizer (every finding fatal),
# and runs appguard's tests against it.  Debian's postgres is not built with
# USE_VALGRIND and AddressSanitizer hangs it at start, hence valgrind.  The
# system's PostgreSQL and appguard are not touched: a private copy of
# PostgreSQL 15 is made, whose bin/postgres is a wrapper that starts the
# real server under valgrind.
#
#   test/sanitize.sh          the default set, which test/run-tests.sh runs
#                             (about 10 minutes here): every pg_regress test
#                             and the TAP tests $DEFAULT_TAP below
#   test/sanitize.sh --full   every pg_regress test and the snapshot,
#                             lifecycle and sweep TAP tests $FULL_TAP below,
#                             with --track-origins=yes (about 32 minutes)
#   test/sanitize.sh FILE...  every pg_regress test and these TAP files
#     AG_REGRESS="..."        pg_regress tests (default: all of them, in the
#                             usual order: the lifecycle tests' expected
#                             outputs count on the tests before them)
#     AG_VALGRIND_ORIGINS=1   --track-origins=yes: where an uninitialised
#                             value came from, about 1.4 times slower
#     AG_NET=127.x            the TAP tests' loopback net (default 127.77)
#     AG_PGPORT               the pg_regress cluster's port (default 55499)
#     AG_KEEP=1               keep the work directory (valgrind and server logs)
#
# The TAP tests see AG_UNDER_VALGRIND=1 and widen the upper bounds they put
# on time by AppGuard::TestEnv::slowdown().
#
# Run as root (it switches to the postgres user) or as the postgres user.
# Ends with a summary (valgrind version, tests passed and failed, processes
# and backends checked, errors in appguard frames and elsewhere, blocks
# "definitely lost" with an appguard frame and elsewhere, UBSan reports,
# server crashes) and a line "sanitize: N passed, M failed", in which the
# three checks "no valgrind error", "no definitely lost block" and "no
# UBSan report" count as tests.  Exit status non-zero if a test failed or
# valgrind reported anything not suppressed by test/valgrind/postgres.supp
# (each entry there is explained), anywhere, or UBSan reported anything.
# Every server it started is stopped, on failure and interrupt too.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# the snapshots (a healthy host, every failed phase, the address guard end
# to end), the lifecycle (a drift found by a sweep pg_cron runs in a
# background worker suspends a grant) and sweeps (every host kind in one
# event loop, 350 hosts of five kinds, a drift and the mass-drift breaker)
DEFAULT_TAP="test/t/012_snapshot_faults.pl test/t/032_lifecycle_cron.pl test/t/040_sweep_results.pl"
# --full: every snapshot, lifecycle and sweep TAP test but 020 and
# 040_sweep_safety, whose subject is time (a cancel must free the backend
# within 500 ms, probes must end at 300 ms and 1 s deadlines)
FULL_TAP="test/t/010_snapshot_tls.pl test/t/011_snapshot_dns.pl test/t/012_snapshot_faults.pl
	test/t/030_lifecycle_reasons.pl test/t/031_lifecycle_grants.pl test/t/032_lifecycle_cron.pl
	test/t/040_sweep_results.pl"

if [ "$(id -u)" = 0 ]; then
	WORK=$(mktemp -d /tmp/appguard-sanitize.XXXXXX)
	rsync -a --exclude .git --exclude test/fuzz/build --exclude 'test/fuzz/corpus-*' \
		--exclude tmp_check --exclude results --exclude log "$ROOT/" "$WORK/tree/"
	chown -R postgres:postgres "$WORK"
	chmod 755 "$WORK"
	# The postgres side runs in the background so that a signal reaches the
	# trap at once; the trap passes it on (the postgres side writes its pid
	# to $WORK/pid) and that side stops everything it started.
	runuser -u postgres -- env AG_SANITIZE_WORK="$WORK" bash "$WORK/tree/test/sanitize.sh" "$@" &
	child=$!
	trap 'p=$(cat "$WORK/pid" 2>/dev/null); kill -TERM "${p:-$child}" 2>/dev/null' INT TERM
	wait "$child"
	rc=$?
	while kill -0 "$child" 2>/dev/null; do		# the trap interrupted wait
		wait "$child"
		rc=$?
	done
	# No process of this run may outlive it: wait for the servers' last
	# valgrind leak checks, then end (by pid) and report any left.
	for _ in $(seq 120); do
		pgrep -f "$WORK/" >/dev/null || break
		sleep 1
	done
	left=$(pgrep -f "$WORK/")
	if [ -n "$left" ]; then
		echo "sanitize: processes left running, ended now:"
		ps -o pid,args -p "$(echo $left | tr ' ' ,)"
		kill -KILL $left 2>/dev/null
		echo "sanitize: 0 passed, 1 failed"
		rc=1
	fi
	if [ "${AG_KEEP:-0}" = 1 ]; then echo "sanitize: kept $WORK"; else rm -rf "$WORK"; fi
	exit $rc
fi

command -v valgrind >/dev/null || { echo "sanitize: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
WORK=${AG_SANITIZE_WORK:-$(mktemp -d /tmp/appguard-sanitize.XXXXXX)}
echo $$ >"$WORK/pid"
TREE=$WORK/tree
[ -d "$TREE" ] || rsync -a --exclude .git --exclude tmp_check --exclude results --exclude log "$ROOT/" "$TREE/"
ORIGINS=${AG_VALGRIND_ORIGINS:-0}
case "${1:-}" in
--full)
	TAP=$FULL_TAP
	ORIGINS=1
	;;
"")	TAP=$DEFAULT_TAP ;;
*)	TAP=$* ;;
esac
TAP=$(echo $TAP)
REGRESS=${AG_REGRESS:-}
VGLOGS=$WORK/valgrind
mkdir -p "$VGLOGS"
start_time=$(date +%s)
export AG_UNDER_VALGRIND=1

# ---- a relocatable copy of PostgreSQL (it finds share/ and lib/ relative
# to its bin/), whose postgres starts the real one under valgrind
SYSBIN=$(pg_config --bindir)
SYSLIB=$(pg_config --pkglibdir)
SYSSHARE=$(pg_config --sharedir)
PG=$WORK/pg
mkdir -p "$PG$(dirname "$SYSBIN")" "$PG$(dirname "$SYSSHARE")"
cp -a "$SYSBIN" "$PG$SYSBIN"
[ -d "$PG$SYSLIB" ] || cp -a "$SYSLIB" "$PG$SYSLIB"
cp -a "$SYSSHARE" "$PG$SYSSHARE"
BIN=$PG$SYSBIN
mv "$BIN/postgres" "$BIN/postgres.real"
# initdb's bootstrap and single-user runs and pg_ctl's version checks run
# the real binary directly: only the server is worth the slowdown.
# --fullpath-after= prints full source paths, so frames in appguard's
# sources are told apart from PostgreSQL's.
[ "$ORIGINS" = 1 ] && origins=--track-origins=yes || origins=
cat >"$BIN/postgres" <<WRAP
#!/bin/sh
case " \$* " in
*" -V "*|*" --version "*|*" -C "*|*" --describe-config "*|*" --boot "*|*" --single "*)
	exec "\$(dirname "\$0")/postgres.real" "\$@" ;;
esac
exec valgrind --tool=memcheck --trace-children=yes $origins \\
	--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
	--error-limit=no --num-callers=40 --fullpath-after= --gen-suppressions=all \\
	--suppressions="$TREE/test/valgrind/postgres.supp" \\
	--log-file="$VGLOGS/vg.%p" "\$(dirname "\$0")/postgres.real" "\$@" -c log_connections=on
WRAP
chmod 755 "$BIN/postgres"
export PATH="$BIN:$PATH"
export PG_CONFIG="$BIN/pg_config"
[ "$(pg_config --bindir)" = "$BIN" ] || { echo "sanitize: the copy of PostgreSQL is not relocatable" >&2; exit 1; }

# ---- stopping: each long command runs in its own process group (run), so
# that an interrupt can end it with all its children; the servers are
# started by pg_ctl in sessions of their own and are stopped by data
# directory: the pg_regress cluster and every TAP test's clusters.
CL=$WORK/cluster
running=
run() {
	setsid "$@" &
	running=$!
	wait "$running"
	local rc=$?
	running=
	return $rc
}
stop_servers() {	# stop_servers [-W]: -W does not wait for the servers to end
	local pidfile
	for pidfile in "$CL/data/postmaster.pid" "$TREE"/tmp_check/t_*_data/pgdata/postmaster.pid; do
		[ -f "$pidfile" ] || continue
		pg_ctl -D "$(dirname "$pidfile")" -m immediate ${1:--w -t 300} stop >/dev/null 2>&1
	done
}
exec 3>&1		# the trap may run inside "run ... >log"
interrupted() {
	trap - INT TERM
	echo "sanitize: interrupted, stopping the servers" >&3
	[ -n "$running" ] && kill -TERM -- "-$running" 2>/dev/null
	stop_servers -W
	exit 130
}
trap interrupted INT TERM

# ---- appguard with UBSan, installed into the copy
cd "$TREE"
make -s PG_CONFIG="$SYSBIN/pg_config" clean >/dev/null
if ! make -s PG_CONFIG="$SYSBIN/pg_config" WERROR=1 \
	COPT="-fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" >"$WORK/build.log" 2>&1 ||
	! make -s PG_CONFIG="$SYSBIN/pg_config" DESTDIR="$PG" install >>"$WORK/build.log" 2>&1; then
	cat "$WORK/build.log"
	echo "sanitize: build failed"
	echo "sanitize: 0 passed, 1 failed"
	exit 1
fi
[ "$(nm -D "$PG$SYSLIB/appguard.so" | grep -c __ubsan)" != 0 ] || { echo "sanitize: appguard.so lacks UBSan" >&2; exit 1; }

passed=0
failed=0
elapsed() { echo "$(($(date +%s) - $1)) s"; }

# ---- pg_regress on a throwaway cluster under valgrind
t=$(date +%s)
PORT=${AG_PGPORT:-55499}
bash "$TREE/test/cluster.sh" start "$CL" "$PORT" 2>/dev/null || {
	# pg_ctl -w waits 60 s; under valgrind the start can take longer
	for _ in $(seq 120); do pg_isready -q -h "$CL" -p "$PORT" && break; sleep 1; done
}
run make -s installcheck ISOLATION= ${REGRESS:+REGRESS="$REGRESS"} PGHOST="$CL" PGPORT="$PORT" >"$WORK/regress.log" 2>&1
ok=$(grep -cE '^(ok|test) .* \.\.\. ok|^ok [0-9]+ ' "$WORK/regress.log")
bad=$(grep -cE '\.\.\. FAILED|^not ok ' "$WORK/regress.log")
grep -E '^(ok|not ok|test) ' "$WORK/regress.log"
[ "$ok" = 0 ] && [ "$bad" = 0 ] && { cat "$WORK/regress.log"; bad=1; }
[ -s "$TREE/regression.diffs" ] && head -100 "$TREE/regression.diffs"
pg_ctl -D "$CL/data" -m fast -w -t 300 stop >/dev/null
echo "sanitize: pg_regress: $ok passed, $bad failed ($(elapsed "$t"))"
passed=$((passed + ok))
failed=$((failed + bad))
regress_backends=$(grep -c 'connection authorized' "$CL/server.log")
cp "$CL/server.log" "$WORK/regress-server.log"
rm -rf "$CL"

# ---- TAP (each test starts its own clusters with this PATH's postgres)
for f in $TAP; do
	t=$(date +%s)
	run make -s prove_installcheck PROVE_FLAGS="-I ./test/perl" PROVE_TESTS="$f" >"$WORK/tap.log" 2>&1
	n=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$WORK/tap.log" | tail -1)
	n=${n:-0}
	if grep -q '^Result: PASS' "$WORK/tap.log"; then
		echo "sanitize: $f: $n passed ($(elapsed "$t"))"
		passed=$((passed + n))
	else
		# "Failed 3/24 subtests"; a test that died before its plan counts once
		bad=$(sed -nE 's/^Failed ([0-9]+)\/[0-9]+ subtests.*/\1/p' "$WORK/tap.log" | tail -1)
		bad=${bad:-0}
		[ "$bad" -gt 0 ] || bad=1
		echo "sanitize: $f: $((n > bad ? n - bad : 0)) passed, $bad failed ($(elapsed "$t"))"
		grep -E '^#|^not ok|^Dubious|^Parse errors|^Bailout' "$WORK/tap.log" | head -60
		passed=$((passed + (n > bad ? n - bad : 0)))
		failed=$((failed + bad))
	fi
	cat "$WORK/tap.log" >>"$WORK/tap-all.log"
	# prove_installcheck removes tmp_check before each test: keep the logs
	stop_servers
	mkdir -p "$WORK/tap-logs/$(basename "$f" .pl)"
	cp "$TREE"/tmp_check/log/* "$WORK/tap-logs/$(basename "$f" .pl)/" 2>/dev/null
done
stop_servers
trap - INT TERM
tap_backends=$(cat "$WORK"/tap-logs/*/*.log 2>/dev/null | grep -c 'connection authorized')
server_logs=("$WORK/regress-server.log" "$WORK"/tap-logs/*/*.log)
ubsan=$(cat "${server_logs[@]}" 2>/dev/null | grep -c 'runtime error:')
crashes=$(cat "${server_logs[@]}" 2>/dev/null | grep -c 'terminated by signal')

# ---- what valgrind found.  A report is a block of lines of one process's
# log; it is appguard's when a frame is in appguard's sources or appguard.so.
# Every server has been stopped by now; a process killed before valgrind
# could finish its log (SIGKILL) has no ERROR SUMMARY line and is counted.
sleep 2
processes=$(grep -l '^==[0-9]*== Memcheck' "$VGLOGS"/vg.* 2>/dev/null | wc -l)
unfinished=$(grep -L '^==[0-9]*== ERROR SUMMARY' "$VGLOGS"/vg.* 2>/dev/null | wc -l)
summary=$(awk -v src="$TREE/src/" '
	function flush() {
		if (block == "") return
		ours = index(block, src) > 0 || index(block, "appguard.so") > 0
		if (block ~ /definitely lost in loss record/) { leaks++; if (ours) leaks_ours++ }
		else if (block ~ /\n==[0-9]+==    (at|by) 0x/) { errors++; if (ours) errors_ours++ }
		if (block ~ /\n==[0-9]+==    (at|by) 0x/) print block > "/dev/stderr"
		block = ""
	}
	/^==[0-9]+== $/ { flush(); next }
	/^==[0-9]+== (HEAP SUMMARY|LEAK SUMMARY|ERROR SUMMARY|Memcheck|Copyright|Using Valgrind|Command|Parent PID|For lists|To see|Use --|Rerun)/ { flush(); next }
	/^[{}]/ || /^   / || /^<insert_a_suppression_name_here>/ { next }
	{ block = block "\n" $0 }
	END { flush(); printf "%d %d %d %d\n", errors, errors_ours, leaks, leaks_ours }
' "$VGLOGS"/vg.* 2>"$WORK/valgrind-reports.txt")
read -r errors errors_ours leaks leaks_ours <<<"$summary"
# valgrind's own count of the reports it printed ("from N contexts", leaks
# included), as a cross-check of the blocks counted above: a report the
# count above missed counts as an error
contexts=$(sed -nE 's/^==[0-9]+== ERROR SUMMARY: [0-9]+ errors from ([0-9]+) contexts.*/\1/p' "$VGLOGS"/vg.* |
	awk '{ s += $1 } END { print s + 0 }')
missed=$((contexts - errors - leaks > 0 ? contexts - errors - leaks : 0))
if [ -s "$WORK/valgrind-reports.txt" ]; then
	echo "---- valgrind reports not suppressed (first 200 lines; all in $WORK/valgrind-reports.txt)"
	head -200 "$WORK/valgrind-reports.txt"
fi
if [ "$((ubsan + crashes))" != 0 ]; then
	echo "---- UBSan reports and crashes in the server logs (first 40 lines)"
	grep -h -B1 -A3 -E 'runtime error:|terminated by signal' "${server_logs[@]}" 2>/dev/null | head -40
fi
echo "sanitize: $(valgrind --version)${origins:+ $origins}; appguard.so with UBSan"
echo "sanitize: ran pg_regress ${REGRESS:-(all)}; TAP $TAP"
echo "sanitize: $processes server processes checked by valgrind ($regress_backends client backends in pg_regress, $tap_backends in TAP); $unfinished ended before valgrind could finish its log"
more=
[ "$missed" = 0 ] || more=", and $missed more reports counted by valgrind"
echo "sanitize: valgrind errors: $errors_ours in appguard frames, $((errors - errors_ours)) elsewhere$more"
echo "sanitize: definitely lost: $leaks_ours blocks with an appguard frame, $((leaks - leaks_ours)) elsewhere"
echo "sanitize: UBSan runtime errors: $ubsan; server processes crashed: $crashes"
# a run in which valgrind checked no process (or backends of pg_regress or
# TAP) checked nothing: that fails too
checked_nothing=$((processes == 0 || regress_backends == 0))
[ -z "$TAP" ] || checked_nothing=$((checked_nothing || tap_backends == 0))
for check in "valgrind errors:$((errors + missed))" "definitely lost blocks:$leaks" "UBSan reports and server crashes:$((ubsan + crashes))" \
	"runs with no backend under valgrind:$checked_nothing"; do
	if [ "${check##*:}" = 0 ]; then
		passed=$((passed + 1))
	else
		echo "sanitize: FAILED: ${check%%:*}"
		failed=$((failed + 1))
	fi
done
echo "sanitize: $((($(date +%s) - start_time) / 60)) min $((($(date +%s) - start_time) % 60)) s"
echo "sanitize: $passed passed, $failed failed"
[ "$failed" = 0 ]
