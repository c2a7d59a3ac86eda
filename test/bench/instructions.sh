#!/bin/bash
# Instructions a token INSERT costs with appguard and without, counted by
# callgrind: a figure the machine's load does not move, for comparing two
# builds of the consent trigger (run it in each checkout).
#
#   sudo bash test/bench/instructions.sh          (about two minutes)
#
# As root it builds and installs appguard first (test/bench/common.sh).  It
# starts a throwaway cluster, loads test/bench/lifecycle/setup.sql (100
# clients, 10,000 tokens, each patient's consent), stops it, and runs the
# server in single-user mode under valgrind --tool=callgrind, counting only
# inside the DO block that inserts AG_BENCH_ROWS rows (3,000) in a loop:
#   rotation   into appguard.refresh_tokens, a subject whose consent exists
#              (the consent trigger's C fast path: rotation_guarded.sql's row)
#   plain      the same rows into bench.refresh_tokens_plain, a copy of the
#              table without triggers
#   retire     then each of those rows revoked (UPDATE ... SET status =
#              'revoked', one statement a row, as a host consuming the old
#              token of a rotation), in each table: the status trigger
#              retires the grant
#   first      then as many first consents (a subject with no consent yet:
#              the trigger starts the consent in C), in each table
# and prints the instructions a row of each and their ratio (plain /
# guarded: the share of a guarded statement's instructions that a plain
# one costs).  The loop runs PL/pgSQL's kept plan: no parsing or planning, so
# the ratio is lower than pgbench's (lifecycle.sh), whose statements each
# pay those on both sides.  AG_KEEP=1 keeps the callgrind files.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${AG_BENCH_PORT:-55497}
ROWS=${AG_BENCH_ROWS:-3000}

command -v valgrind >/dev/null || { echo "instructions: valgrind is needed (apt-get install -y valgrind)" >&2; exit 2; }
. "$HERE/common.sh"
bench_workdir bench-instr "$HERE/lifecycle"

PSQL=(psql -X -q -h "$WORK/pg" -p "$PORT" -d postgres -v ON_ERROR_STOP=1)
as_pg "${PSQL[@]}" -f "$WORK/lifecycle/setup.sql" >"$WORK/setup.log"
as_pg "$BIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null

# patient k of setup.sql belongs to client 1 + k % 100
loop() {
	printf "DO \$\$ BEGIN FOR n IN 1..%d LOOP INSERT INTO %s (token_id, client_id, subject) VALUES ('cg-' || nextval('bench.token_seq'), 'client-' || (1 + (1 + n %% 10000) %% 100), 'patient-' || (1 + n %% 10000)); END LOOP; END \$\$;\n" "$ROWS" "$1"
}

# the same, each row a first consent: a subject with no consent yet
first_loop() {
	printf "DO \$\$ BEGIN FOR n IN 1..%d LOOP INSERT INTO %s (token_id, client_id, subject) VALUES ('fc-' || nextval('bench.token_seq'), 'client-' || (1 + n %% 100), 'first-' || n); END LOOP; END \$\$;\n" "$ROWS" "$1"
}

# each row the rotation loop inserted, revoked by a statement of its own
revoke_loop() {
	printf "DO \$\$ DECLARE t text; BEGIN FOR t IN SELECT token_id FROM %s WHERE token_id LIKE 'cg-%%' AND status = 'active' LOOP UPDATE %s SET status = 'revoked' WHERE token_id = t; END LOOP; END \$\$;\n" "$1" "$1"
}

count() {
	local name=$1 table=$2 script=${3:-loop}
	"$script" "$table" >"$WORK/$name.sql"
	as_pg valgrind --tool=callgrind --toggle-collect=plpgsql_inline_handler \
		--callgrind-out-file="$WORK/$name.callgrind" \
		"$BIN/postgres" --single -D "$WORK/pg/data" postgres <"$WORK/$name.sql" >"$WORK/$name.log" 2>&1
	if grep -q 'ERROR' "$WORK/$name.log"; then
		grep 'ERROR' "$WORK/$name.log" >&2
		exit 1
	fi
	awk '/^(summary|totals):/ { print $2; exit }' "$WORK/$name.callgrind"
}

rotation=$(count rotation appguard.refresh_tokens)
plain=$(count plain bench.refresh_tokens_plain)
retire=$(count retire appguard.refresh_tokens revoke_loop)
retire_plain=$(count retire_plain bench.refresh_tokens_plain revoke_loop)
first=$(count first appguard.refresh_tokens first_loop)
first_plain=$(count first_plain bench.refresh_tokens_plain first_loop)
awk -v r="$rotation" -v p="$plain" -v rr="$retire" -v rp="$retire_plain" \
	-v f="$first" -v fp="$first_plain" -v n="$ROWS" 'BEGIN {
	printf "instructions a row: rotation INSERT %.0f, plain INSERT %.0f, plain / rotation %.3f (%d rows each)\n",
		r / n, p / n, p / r, n
	printf "instructions a row: revoking UPDATE %.0f, plain UPDATE %.0f, plain / revoking %.3f (%d rows each)\n",
		rr / n, rp / n, rp / rr, n
	printf "instructions a row: first consent INSERT %.0f, plain INSERT %.0f, plain / first consent %.3f (%d rows each)\n",
		f / n, fp / n, fp / f, n }'
# (the cluster is started again only to be stopped and removed at exit)
as_pg "$BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w start >/dev/null
