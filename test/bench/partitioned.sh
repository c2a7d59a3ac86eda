#!/bin/bash
# appguard on a partitioned token table: the suspension fan-out of 100,000
# grants of one client and the refresh check, on a plain table and on the
# same table partitioned by issue time (30 daily partitions, primary key
# (token_id, issued_at)), each as a ratio to the bare statement on the same
# table in the same run (not a test: it prints figures).
#
#   sudo bash test/bench/partitioned.sh
#
# As root it builds and installs appguard first (test/bench/common.sh).
# It starts a throwaway cluster, loads test/bench/lifecycle/setup.sql (its
# helpers) and test/bench/partitioned/setup.sql, then runs
# test/bench/partitioned/round.sql on each table per round:
#   fan-out  CPU time of a drifting snapshot suspending AG_BENCH_TOKENS
#            grants / CPU time of a bare UPDATE ... SET status of the same
#            rows (fresh, appguard's triggers off);
#   check    CPU time of AG_BENCH_CALLS appguard_check_refresh(tbl, key)
#            in one statement / of as many bare SELECTs of the row's status
#            by its token id (the statement's own cost subtracted).
# Settings: AG_BENCH_ROUNDS (3), AG_BENCH_TOKENS (100000), AG_BENCH_CALLS
# (100000), AG_BENCH_PORT (55493), AG_KEEP=1 keeps the work directory.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${AG_BENCH_ROUNDS:-3}
TOKENS=${AG_BENCH_TOKENS:-100000}
CALLS=${AG_BENCH_CALLS:-100000}
PORT=${AG_BENCH_PORT:-55493}

. "$HERE/common.sh"
bench_workdir partitioned "$HERE/lifecycle" "$HERE/partitioned"

PSQL=(psql -X -q -h "$WORK/pg" -p "$PORT" -d postgres -v ON_ERROR_STOP=1)
as_pg "${PSQL[@]}" -f "$WORK/lifecycle/setup.sql" >"$WORK/setup.log"
as_pg "${PSQL[@]}" -f "$WORK/partitioned/setup.sql" >>"$WORK/setup.log"

median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.3f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

echo "appguard partitioned-table benchmark: PostgreSQL $(as_pg "${PSQL[@]}" -Atc 'SHOW server_version')," \
	"$(nproc) CPUs, $ROUNDS rounds, $TOKENS grants, $CALLS checks"
declare -A fan check fan_ms bare_ms check_us select_us
for shape in plain part; do
	fan[$shape]='' check[$shape]='' fan_ms[$shape]='' bare_ms[$shape]='' check_us[$shape]='' select_us[$shape]=''
done
for r in $(seq 1 "$ROUNDS"); do
	for shape in plain part; do
		line=$(as_pg "${PSQL[@]}" -At -F ' ' -v round="$r" -v shape="$shape" -v tokens="$TOKENS" \
			-v calls="$CALLS" -f "$WORK/partitioned/round.sql")
		read -r fcpu fwall bcpu bwall suspended bare_n chk sel <<<"$line"
		if [ "$suspended" != "$TOKENS" ] || [ "$bare_n" != "$TOKENS" ]; then
			echo "bench: $shape round $r suspended $suspended and updated $bare_n rows, not $TOKENS" >&2
			exit 1
		fi
		fan[$shape]+="$(ratio "$fcpu" "$bcpu") " check[$shape]+="$(ratio "$chk" "$sel") "
		fan_ms[$shape]+="$fcpu " bare_ms[$shape]+="$bcpu "
		check_us[$shape]+="$(awk -v t="$chk" -v n="$CALLS" 'BEGIN { printf "%.3f", 1000 * t / n }') "
		select_us[$shape]+="$(awk -v t="$sel" -v n="$CALLS" 'BEGIN { printf "%.3f", 1000 * t / n }') "
		printf '  %-5s round %d: fan-out %s ms CPU (%s wall), bare UPDATE %s ms (%s); %d checks %s ms CPU, bare SELECTs %s ms\n' \
			"$shape" "$r" "$fcpu" "$fwall" "$bcpu" "$bwall" "$CALLS" "$chk" "$sel" >&2
	done
done
med() { printf '%s\n' $1 | median; }
echo
printf '%-58s %10s %10s\n' "measure (median of $ROUNDS rounds)" plain partitioned
printf '%-58s %10s %10s\n' "fan-out of $TOKENS grants, CPU ms" "$(med "${fan_ms[plain]}")" "$(med "${fan_ms[part]}")"
printf '%-58s %10s %10s\n' "bare UPDATE of the same rows, CPU ms" "$(med "${bare_ms[plain]}")" "$(med "${bare_ms[part]}")"
printf '%-58s %10s %10s\n' "fan-out / bare UPDATE" "$(med "${fan[plain]}")" "$(med "${fan[part]}")"
printf '%-58s %10s %10s\n' "refresh check, us per call" "$(med "${check_us[plain]}")" "$(med "${check_us[part]}")"
printf '%-58s %10s %10s\n' "bare SELECT of the row's status by token id, us per call" "$(med "${select_us[plain]}")" "$(med "${select_us[part]}")"
printf '%-58s %10s %10s\n' "refresh check / bare SELECT" "$(med "${check[plain]}")" "$(med "${check[part]}")"
