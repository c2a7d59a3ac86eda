#!/bin/bash
# Memory safety: the PostgreSQL server runs under valgrind memcheck (every
# process it forks, backends included, is checked) with appguard built with
# UndefinedBehaviorSanitizer (every finding fatal), and runs the lifecycle
# regress tests and the snapshot TAP tests.  Debian's postgres is not built
# with USE_VALGRIND and AddressSanitizer hangs it at start, hence valgrind.
# The system's PostgreSQL and appguard are not touched: a private copy of
# PostgreSQL 15 is made, whose bin/postgres is a wrapper that starts the
# real server under valgrind.
#
#   test/sanitize.sh [TAP files]
#     default TAP: test/t/010_snapshot_tls.pl test/t/011_snapshot_dns.pl
#                  test/t/012_snapshot_faults.pl test/t/020_snapshot_safety.pl
#     AG_REGRESS="..."  pg_regress tests (default: all of them, in the usual
#                       order: the lifecycle tests' expected outputs count
#                       on the tests before them)
#     AG_NET=127.x      the TAP tests' loopback net (default 127.77)
#     AG_KEEP=1         keep the work directory (valgrind logs, server logs)
#
# Run as root (it switches to the postgres user) or as the postgres user.
# Ends with a summary: valgrind version, tests passed/failed, processes and
# backends checked, errors (in appguard frames and elsewhere), and blocks
# "definitely lost" with an appguard frame; exit status non-zero if a test
# failed or valgrind reported anything not suppressed by
# test/valgrind/postgres.supp (each entry there is explained).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" = 0 ]; then
	WORK=$(mktemp -d /tmp/appguard-sanitize.XXXXXX)
	rsync -a --exclude .git --exclude test/fuzz/build --exclude 'test/fuzz/corpus-*' \
		--exclude tmp_check --exclude results "$ROOT/" "$WORK/tree/"
	chown -R postgres:postgres "$WORK"
	chmod 755 "$WORK"
	runuser -u postgres -- env AG_SANITIZE_WORK="$WORK" AG_KEEP="${AG_KEEP:-0}" \
		AG_NET="${AG_NET:-127.77}" AG_REGRESS="${AG_REGRESS:-}" \
		bash "$WORK/tree/test/sanitize.sh" "$@"
	rc=$?
	if [ "${AG_KEEP:-0}" = 1 ]; then echo "sanitize: kept $WORK"; else rm -rf "$WORK"; fi
	exit $rc
fi

command -v valgrind >/dev/null || { echo "sanitize: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
WORK=${AG_SANITIZE_WORK:-$(mktemp -d /tmp/appguard-sanitize.XXXXXX)}
TREE=$WORK/tree
[ -d "$TREE" ] || rsync -a --exclude .git --exclude tmp_check --exclude results "$ROOT/" "$TREE/"
TAP=${*:-test/t/010_snapshot_tls.pl test/t/011_snapshot_dns.pl test/t/012_snapshot_faults.pl test/t/020_snapshot_safety.pl}
REGRESS=${AG_REGRESS:-}
VGLOGS=$WORK/valgrind
mkdir -p "$VGLOGS"
start_time=$(date +%s)

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
cat >"$BIN/postgres" <<WRAP
#!/bin/sh
case " \$* " in
*" -V "*|*" --version "*|*" -C "*|*" --describe-config "*|*" --boot "*|*" --single "*)
	exec "\$(dirname "\$0")/postgres.real" "\$@" ;;
esac
exec valgrind --tool=memcheck --trace-children=yes --track-origins=yes \\
	--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
	--error-limit=no --num-callers=40 --fullpath-after= --gen-suppressions=all \\
	--suppressions="$TREE/test/valgrind/postgres.supp" \\
	--log-file="$VGLOGS/vg.%p" "\$(dirname "\$0")/postgres.real" "\$@" -c log_connections=on
WRAP
chmod 755 "$BIN/postgres"
export PATH="$BIN:$PATH"
export PG_CONFIG="$BIN/pg_config"
[ "$(pg_config --bindir)" = "$BIN" ] || { echo "sanitize: the copy of PostgreSQL is not relocatable" >&2; exit 1; }

# ---- appguard with UBSan, installed into the copy
cd "$TREE"
make -s PG_CONFIG="$SYSBIN/pg_config" clean >/dev/null
if ! make -s PG_CONFIG="$SYSBIN/pg_config" WERROR=1 \
	COPT="-fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" >"$WORK/build.log" 2>&1 ||
	! make -s PG_CONFIG="$SYSBIN/pg_config" DESTDIR="$PG" install >>"$WORK/build.log" 2>&1; then
	cat "$WORK/build.log"
	echo "sanitize: build failed"
	exit 1
fi
[ "$(nm -D "$PG$SYSLIB/appguard.so" | grep -c __ubsan)" != 0 ] || { echo "sanitize: appguard.so lacks UBSan" >&2; exit 1; }

passed=0
failed=0

# ---- pg_regress on a throwaway cluster under valgrind
PORT=${AG_PGPORT:-55499}
CL=$WORK/cluster
bash "$TREE/test/cluster.sh" start "$CL" "$PORT" 2>/dev/null || {
	# pg_ctl -w waits 60 s; under valgrind the start can take longer
	for _ in $(seq 120); do pg_isready -q -h "$CL" -p "$PORT" && break; sleep 1; done
}
make -s installcheck TAP_TESTS= ${REGRESS:+REGRESS="$REGRESS"} PGHOST="$CL" PGPORT="$PORT" >"$WORK/regress.log" 2>&1
ok=$(grep -cE '^(ok|test) .* \.\.\. ok|^ok [0-9]+ ' "$WORK/regress.log")
bad=$(grep -cE '\.\.\. FAILED|^not ok ' "$WORK/regress.log")
grep -E '^(ok|not ok|test) ' "$WORK/regress.log"
[ "$ok" = 0 ] && [ "$bad" = 0 ] && { cat "$WORK/regress.log"; bad=1; }
echo "sanitize: pg_regress: $ok passed, $bad failed"
passed=$((passed + ok))
failed=$((failed + bad))
pg_ctl -D "$CL/data" -m fast -w -t 300 stop >/dev/null
regress_backends=$(grep -c 'connection authorized' "$CL/server.log")
cp "$CL/server.log" "$WORK/regress-server.log"
rm -rf "$CL"

# ---- TAP (each test starts its own clusters with this PATH's postgres)
tap_ok=0
tap_bad=0
for t in $TAP; do
	if make -s prove_installcheck PROVE_FLAGS="-I ./test/perl" PROVE_TESTS="$t" >"$WORK/tap.log" 2>&1 &&
		grep -q '^Result: PASS' "$WORK/tap.log"; then
		n=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$WORK/tap.log" | tail -1)
		echo "sanitize: $t: ${n:-0} tests passed"
		tap_ok=$((tap_ok + ${n:-0}))
	else
		echo "sanitize: $t: FAILED"
		tail -30 "$WORK/tap.log"
		tap_bad=$((tap_bad + 1))
	fi
	cat "$WORK/tap.log" >>"$WORK/tap-all.log"
	# prove_installcheck removes tmp_check before each test: keep the logs
	mkdir -p "$WORK/tap-logs/$(basename "$t" .pl)"
	cp "$TREE"/tmp_check/log/*.log "$WORK/tap-logs/$(basename "$t" .pl)/" 2>/dev/null
done
passed=$((passed + tap_ok))
failed=$((failed + tap_bad))
tap_backends=$(cat "$WORK"/tap-logs/*/*.log 2>/dev/null | grep -c 'connection authorized')
ubsan=$(cat "$WORK/regress-server.log" "$WORK"/tap-logs/*/*.log 2>/dev/null | grep -c 'runtime error:')

# ---- what valgrind found.  A report is a block of lines of one process's
# log; it is appguard's when a frame is in appguard's sources or appguard.so.
# (valgrind logs of processes still running would be incomplete: every
# server has been stopped by now.)
sleep 2
processes=$(grep -l '^==[0-9]*== Memcheck' "$VGLOGS"/vg.* 2>/dev/null | wc -l)
summary=$(awk -v src="$TREE/src/" '
	function flush() {
		if (block == "") return
		ours = index(block, src) > 0 || index(block, "appguard.so") > 0
		if (block ~ /definitely lost in loss record/) { leaks++; if (ours) leaks_ours++ }
		else if (block ~ /\n==[0-9]+==    (at|by) 0x/) { errors++; if (ours) errors_ours++ }
		if (block ~ /\n==[0-9]+==    (at|by) 0x/ && (ours || show_all)) print block > "/dev/stderr"
		block = ""
	}
	/^==[0-9]+== $/ { flush(); next }
	/^==[0-9]+== (HEAP SUMMARY|LEAK SUMMARY|ERROR SUMMARY|Memcheck|Copyright|Using Valgrind|Command|Parent PID|For lists|To see|Use --|Rerun)/ { flush(); next }
	/^[{}]/ || /^   / || /^<insert_a_suppression_name_here>/ { next }
	{ block = block "\n" $0 }
	END { flush(); printf "%d %d %d %d\n", errors, errors_ours, leaks, leaks_ours }
' show_all=1 "$VGLOGS"/vg.* 2>"$WORK/valgrind-reports.txt")
read -r errors errors_ours leaks leaks_ours <<<"$summary"
if [ -s "$WORK/valgrind-reports.txt" ]; then
	echo "---- valgrind reports not suppressed (first 200 lines; all in $WORK/valgrind-reports.txt)"
	head -200 "$WORK/valgrind-reports.txt"
fi
echo "sanitize: $(valgrind --version); appguard.so with UBSan"
echo "sanitize: ran pg_regress ${REGRESS:-(all)}; TAP $TAP"
echo "sanitize: $processes server processes checked by valgrind ($regress_backends client backends in pg_regress, $tap_backends in TAP)"
echo "sanitize: valgrind errors: $errors_ours in appguard frames, $((errors - errors_ours)) elsewhere"
echo "sanitize: definitely lost: $leaks_ours blocks with an appguard frame, $((leaks - leaks_ours)) elsewhere"
echo "sanitize: UBSan runtime errors: $ubsan"
echo "sanitize: $((($(date +%s) - start_time) / 60)) min $((($(date +%s) - start_time) % 60)) s"
[ "$errors" = 0 ] && [ "$leaks" = 0 ] && [ "$ubsan" = 0 ] || failed=$((failed + 1))
echo "sanitize: $passed passed, $failed failed"
[ "$failed" = 0 ]
