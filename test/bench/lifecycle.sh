#!/bin/bash
# appguard lifecycle benchmark: what appguard adds to an auth server's hot
# paths, as ratios measured side by side in one run (not a test: it asserts
# nothing, it prints figures and whether each goal is met).
#
#   sudo bash test/bench/lifecycle.sh
#
# As root it builds and installs appguard first; as any user it expects
# appguard installed.  It starts a throwaway cluster (test/cluster.sh, as
# the postgres user), loads the data of test/bench/lifecycle/setup.sql (no
# network: snapshots are stored as appguard_snapshot stores them, which
# fires the same triggers) and measures, side by side: each pgbench run
# executes the script with appguard and the one without, interleaved on
# the same connections (see pair below); the fan-out rounds alternate
# which statement runs first.
#
#   refresh   pgbench: a refresh transaction on a protected table with
#             appguard_check_refresh (refresh_guarded.sql) vs the same
#             transaction on the same table unprotected (refresh_plain.sql);
#             goal: TPS ratio >= 0.95.  Also the check asked in the
#             statement that reads the grant (one round trip less:
#             refresh_guarded_one_statement.sql), the floor of any check
#             with that signature (a call that does nothing in its place:
#             refresh_noop_one_statement.sql) and, for information,
#             appguard's own table (refresh_own.sql vs refresh_own_plain.sql).
#   consent   pgbench: token INSERT into appguard.refresh_tokens, whose
#             AFTER INSERT trigger (appguard.grant_insert, C; the same on
#             every protected table) tracks the grant in appguard.grants,
#             for a subject with no consent yet: a first consent, which
#             starts the subject's consent with the client's cached
#             snapshot as baseline (in C: one kept INSERT into
#             appguard.consents)
#             (consent_first_guarded.sql), vs the same INSERT into a copy
#             of the table without triggers (consent_first_plain.sql);
#             goal >= 0.8.
#   rotation  pgbench: the same INSERT for a subject whose consent exists
#             (a rotated token, or a remembered approval: the trigger's C
#             fast path gives it the consent's baseline)
#             (rotation_guarded.sql vs rotation_plain.sql); goal >= 0.8.
#             (Before 0.2.0's consents, insert_guarded.sql and
#             insert_plain.sql were the consent pair: subject 'patient' of
#             one of 100 clients, so under the consent model every insert
#             after a client's first is a rotation; compare.sh's earlier
#             commits still run them.)
#   fan-out   one drifting snapshot suspending 100,000 tokens of one client
#             (appguard.refresh_tokens' status and error_uri, written as
#             the table's owner; their grants are held by the suspension's
#             baseline, appguard.grant_states, and not written) vs a
#             bare UPDATE ... SET status of the same rows of
#             appguard.refresh_tokens, and of a copy of them in a table
#             without appguard's triggers (fanout.sql); goal: time ratio
#             <= 1.5, measured in CPU time of the backend.
#   calls     for information: the per-call CPU time of
#             appguard_check_refresh(tbl, row_key) in one statement over
#             AG_BENCH_CALLS grants, of the call that does nothing, and of
#             the check's privilege test alone (through SQL), as an auth
#             server's role that is not a superuser and as the superuser
#             (calls.sql).
#
# Since the one grant model (issue 11) appguard.refresh_tokens is one more
# protected table: its grants' state is in appguard.grants, like the
# protected table's.  test/bench/compare.sh runs this benchmark of an
# earlier commit and of the working tree, interleaved, in one run.
#
# Settings: AG_BENCH_ROUNDS (3), AG_BENCH_SECONDS per pgbench run (10),
# AG_BENCH_CLIENTS (1), AG_BENCH_TOKENS (100000), AG_BENCH_CALLS (200000),
# AG_BENCH_PORT (55491), AG_KEEP=1 keeps the work directory.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${AG_BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${AG_BENCH_SECONDS:-10}
CLIENTS=${AG_BENCH_CLIENTS:-1}
TOKENS=${AG_BENCH_TOKENS:-100000}
CALLS=${AG_BENCH_CALLS:-200000}
PORT=${AG_BENCH_PORT:-55491}

. "$HERE/common.sh"
bench_workdir bench "$HERE/lifecycle"

PSQL=(psql -X -q -h "$WORK/pg" -p "$PORT" -d postgres -v ON_ERROR_STOP=1)
as_pg "${PSQL[@]}" -f "$WORK/lifecycle/setup.sql" >"$WORK/setup.log"

PGBENCH=(pgbench -n -h "$WORK/pg" -p "$PORT" -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN")
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.3f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
verdict() {	# verdict VALUE OP GOAL
	awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= g : v <= g; print ok ? "goal met" : "GOAL MISSED" }'
}

# Side by side: one pgbench run executes both scripts, each transaction
# picking one at random (weights 1:1), on the same connections at the same
# time, so both see the same machine (other load, caches, frequency).  With
# a fixed number of clients a script's TPS is clients / its latency, so the
# TPS ratio is latency(without) / latency(with), per round; the median of
# the rounds is reported.
pair() {	# pair NAME GUARDED_SCRIPT PLAIN_SCRIPT
	local name=$1 a=$2 b=$3 r lat ratios=()
	for r in $(seq 1 "$ROUNDS"); do
		lat=($(as_pg "${PGBENCH[@]}" -f "$WORK/lifecycle/$a@1" -f "$WORK/lifecycle/$b@1" postgres 2>&1 |
			sed -nE 's/^ - latency average = ([0-9.]+) ms$/\1/p'))
		if [ ${#lat[@]} != 2 ]; then
			echo "bench: pgbench gave no per-script latencies for $a and $b" >&2
			exit 1
		fi
		ratios+=("$(awk -v g="${lat[0]}" -v p="${lat[1]}" 'BEGIN { printf "%.3f", p / g }')")
		printf '  %-10s round %d: %.3f ms with appguard, %.3f ms without, TPS ratio %s\n' \
			"$name" "$r" "${lat[0]}" "${lat[1]}" "${ratios[-1]}" >&2
	done
	printf '%s\n' "${ratios[@]}" | median
}

echo "appguard lifecycle benchmark: PostgreSQL $(as_pg "${PSQL[@]}" -Atc 'SHOW server_version'), $(nproc) CPUs," \
	"$ROUNDS rounds"
echo "pgbench: ${PGBENCH[*]/#$WORK/WORK} -f WITH.sql@1 -f WITHOUT.sql@1 postgres"
echo "         (both scripts in one run, interleaved; scripts in test/bench/lifecycle/)"
echo

refresh=$(pair refresh refresh_guarded.sql refresh_plain.sql)
one=$(pair refresh-1 refresh_guarded_one_statement.sql refresh_plain.sql)
floor=$(pair no-op refresh_noop_one_statement.sql refresh_plain.sql)
own=$(pair own-table refresh_own.sql refresh_own_plain.sql)
consent=$(pair consent consent_first_guarded.sql consent_first_plain.sql)
rotation=$(pair rotation rotation_guarded.sql rotation_plain.sql)

# Fan-out: timed inside the server (bench.time_ms), wall clock and the
# backend's CPU time; the ratios are of CPU time, which the other processes
# of a shared machine do not inflate (wall-clock ratios printed too).
fan_ratios=()
fan_copy_ratios=()
for r in $(seq 1 "$ROUNDS"); do
	first=$([ $((r % 2)) = 1 ] && echo true || echo false)
	line=$(as_pg "${PSQL[@]}" -At -F ' ' -v round="$r" -v tokens="$TOKENS" -v appguard_first="$first" \
		-f "$WORK/lifecycle/fanout.sql")
	read -r ag_wall ag_cpu bare_wall bare_cpu copy_wall copy_cpu suspended bare_n copy_n reasons <<<"$line"
	if [ "$suspended" != "$TOKENS" ] || [ "$bare_n" != "$TOKENS" ] || [ "$copy_n" != "$TOKENS" ]; then
		echo "bench: fan-out round $r changed $suspended, $bare_n and $copy_n rows, not $TOKENS" >&2
		exit 1
	fi
	fan_ratios+=("$(awk -v a="$ag_cpu" -v b="$bare_cpu" 'BEGIN { printf "%.3f", a / b }')")
	fan_copy_ratios+=("$(awk -v a="$ag_cpu" -v b="$copy_cpu" 'BEGIN { printf "%.3f", a / b }')")
	printf '  %-10s round %d: %s tokens suspended (%s) in %s ms CPU (%s wall); bare UPDATE of the same rows %s ms (%s), ratio %s; of a copy without triggers %s ms (%s), ratio %s\n' \
		fan-out "$r" "$suspended" "$reasons" "$ag_cpu" "$ag_wall" "$bare_cpu" "$bare_wall" "${fan_ratios[-1]}" \
		"$copy_cpu" "$copy_wall" "${fan_copy_ratios[-1]}" >&2
done
# Calls: per-call CPU time (microseconds) of the check, the call that does
# nothing and the privilege test, the statement's own cost subtracted
per_call() {	# per_call CPU_MS EMPTY_MS
	awk -v t="$1" -v e="$2" -v n="$CALLS" 'BEGIN { printf "%.3f", 1000 * (t - e) / n }'
}
call_check=() call_noop=() call_priv=() su_check=() su_noop=() su_priv=()
for r in $(seq 1 "$ROUNDS"); do
	read -r c n p e <<<"$(as_pg "${PSQL[@]}" -U bench_auth -At -F ' ' -v calls="$CALLS" -f "$WORK/lifecycle/calls.sql")"
	call_check+=("$(per_call "$c" "$e")") call_noop+=("$(per_call "$n" "$e")") call_priv+=("$(per_call "$p" "$e")")
	read -r c n p e <<<"$(as_pg "${PSQL[@]}" -At -F ' ' -v calls="$CALLS" -f "$WORK/lifecycle/calls.sql")"
	su_check+=("$(per_call "$c" "$e")") su_noop+=("$(per_call "$n" "$e")") su_priv+=("$(per_call "$p" "$e")")
	printf '  %-10s round %d: us per call of %d, as a non-superuser role: check %s, no-op %s, privilege test %s; as the superuser: check %s, no-op %s, privilege test %s\n' \
		calls "$r" "$CALLS" "${call_check[-1]}" "${call_noop[-1]}" "${call_priv[-1]}" \
		"${su_check[-1]}" "${su_noop[-1]}" "${su_priv[-1]}" >&2
done

fanout=$(printf '%s\n' "${fan_ratios[@]}" | median)
fanout_copy=$(printf '%s\n' "${fan_copy_ratios[@]}" | median)

echo
printf '%-64s %8s  %-6s %s\n' "measure (median of $ROUNDS rounds)" ratio goal verdict
printf '%-64s %8s  %-6s %s\n' "refresh TPS, protected table + appguard_check_refresh / unprotected" \
	"$refresh" ">=0.95" "$(verdict "$refresh" '>=' 0.95)"
printf '%-64s %8s  %-6s %s\n' "  the same, check asked in the SELECT ... FOR UPDATE of the grant" \
	"$one" ">=0.95" "$(verdict "$one" '>=' 0.95)"
printf '%-64s %8s  %-6s %s\n' "  the same with a call that does nothing in place of the check" \
	"$floor" "" "(the floor of any check)"
printf '%-64s %8s  %-6s %s\n' "refresh TPS, appguard.refresh_tokens / copy without appguard" \
	"$own" "" "(for information)"
printf '%-64s %8s  %-6s %s\n' "token INSERT TPS, first consent (cached snapshot) / plain" \
	"$consent" ">=0.8" "$(verdict "$consent" '>=' 0.8)"
printf '%-64s %8s  %-6s %s\n' "token INSERT TPS, rotation (the consent's baseline) / plain" \
	"$rotation" ">=0.8" "$(verdict "$rotation" '>=' 0.8)"
printf '%-64s %8s  %-6s %s\n' "fan-out CPU, drifting snapshot suspending $TOKENS / bare UPDATE" \
	"$fanout" "<=1.5" "$(verdict "$fanout" '<=' 1.5)"
printf '%-64s %8s  %-6s %s\n' "  / bare UPDATE of a copy of the rows in a table without triggers" \
	"$fanout_copy" "<=1.5" "$(verdict "$fanout_copy" '<=' 1.5)"
printf '%-64s %8s  %s\n' "us per call in one statement (non-superuser role / superuser):" "" ""
printf '%-64s %8s  %s\n' "  appguard_check_refresh(tbl, row_key), allowed" \
	"$(printf '%s\n' "${call_check[@]}" | median)" "/ $(printf '%s\n' "${su_check[@]}" | median)"
printf '%-64s %8s  %s\n' "  a call that does nothing, same signature" \
	"$(printf '%s\n' "${call_noop[@]}" | median)" "/ $(printf '%s\n' "${su_noop[@]}" | median)"
printf '%-64s %8s  %s\n' "  its privilege test alone (has_table_privilege + row_security_active)" \
	"$(printf '%s\n' "${call_priv[@]}" | median)" "/ $(printf '%s\n' "${su_priv[@]}" | median)"
