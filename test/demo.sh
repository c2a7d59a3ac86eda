#!/bin/bash
# The appguard demo: the whole lifecycle, on real servers on loopback.
#
#   sudo bash test/demo.sh
#
# As root on Debian 12, from a clone of the repository: installs what it
# needs (test/install-deps.sh), builds and installs appguard, starts real
# TLS servers (nginx) and a real DNS server (knotd) on 127.x addresses with
# a test PKI made now (test/env/agenv), and a throwaway PostgreSQL cluster
# (test/cluster.sh), all as the postgres user.  Then it tells the story:
#
#   0. a real snapshot of a few local test hosts;
#   1. an auth server registers an app;              appguard_register_client
#   2. patients consent: refresh tokens are issued;  INSERT ... refresh_tokens
#   3. the app renews its certificate, same identity: nothing is suspended;
#   4. the organization in its certificate changes:  the tokens are suspended,
#      with an error_uri; the token endpoint's invalid_grant body
#      (appguard_check_refresh) and the page behind error_uri (appguard_explain);
#   5. a patient re-approves: allowed again.         appguard_reapprove
#
# Every step is checked; the demo exits non-zero at the first step that does
# not behave as expected.  Everything it started is stopped, whatever happens.
#   AG_NET        the 127.x.0.0/16 net for the servers (default 127.77)
#   AG_DEMO_PORT  the cluster's port (Unix socket only; default 55490)
#   AG_KEEP=1     keep the work directory (logs, cluster) for a look
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NET=${AG_NET:-127.77}
PORT=${AG_DEMO_PORT:-55490}
TLS_PORT=${AG_TLS_PORT:-8443}
STARTED=$SECONDS

if [ "$(id -u)" != 0 ]; then
	echo "demo: run me as root (I install packages and switch to the postgres user): sudo bash test/demo.sh" >&2
	exit 2
fi

WORK=$(mktemp -d /tmp/appguard-demo.XXXXXX)
chmod 755 "$WORK"
LOG=$WORK/demo.log

as_postgres() {
	runuser -u postgres -- env PATH="$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin):$PATH" \
		AG_NET="$NET" "$@"
}

# fds 3 and 4: the terminal, for cleanup, which may run (on a signal)
# while a function's output is redirected to the log
exec 3>&1 4>&2

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	exec 1>&3 2>&4
	if [ -d "$WORK/tree" ]; then
		as_postgres perl "$WORK/tree/test/env/agenv" down "$WORK/env" >>"$LOG" 2>&1 || true
		as_postgres bash "$WORK/tree/test/cluster.sh" stop "$WORK/pg" >>"$LOG" 2>&1 || true
	fi
	if [ "$rc" = 130 ]; then
		echo
		echo "demo: interrupted"
	elif [ "$rc" != 0 ]; then
		echo
		echo "demo: FAILED (exit $rc); the last lines of $LOG:"
		tail -n 25 "$LOG" 2>/dev/null | sed 's/^/    /'
	fi
	if [ "${AG_KEEP:-0}" = 1 ]; then
		echo "demo: kept $WORK"
	else
		rm -rf "$WORK"
	fi
	echo "demo: servers and cluster stopped ($((SECONDS - STARTED)) s)"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- output helpers
# colours only on a terminal
if [ -t 1 ]; then
	BOLD=$'\033[1m' GREEN=$'\033[32m' RED=$'\033[31m' PLAIN=$'\033[0m'
else
	BOLD='' GREEN='' RED='' PLAIN=''
fi

heading() {
	printf '\n%s== %s%s\n\n' "$BOLD" "$*" "$PLAIN"
}

say() {
	printf '%s\n' "$@" | fold -s -w 100
}

# Run SQL, print nothing but errors
psql_demo() {
	as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/pg" -p "$PORT" -d postgres "$@"
}

# Show a statement, then its result as psql prints it
show() {
	printf '%s\n' "$1" | sed 's/^/    sql> /'
	echo
	printf '%s\n' "$1" | psql_demo -P pager=off -P footer=off -f - 2>>"$LOG" | sed 's/^/    /'
	echo
}

# Show a statement, then its result unaligned (one value, e.g. pretty JSON)
show_raw() {
	printf '%s\n' "$1" | sed 's/^/    sql> /'
	echo
	printf '%s\n' "$1" | psql_demo -At -f - 2>>"$LOG" | sed 's/^/    /'
	echo
}

# One value of a query
value() {
	psql_demo -At -c "$1" 2>>"$LOG"
}

# A check: the query returns t, or the demo stops
expect() {
	local what=$1 got
	got=$(value "$2") || got="(error)"
	if [ "$got" = t ]; then
		printf '    %sok%s  %s\n' "$GREEN" "$PLAIN" "$what"
	else
		printf '    %sFAILED%s  %s (the check returned "%s")\n' "$RED" "$PLAIN" "$what" "$got"
		echo "check failed: $what: $2" >>"$LOG"
		exit 1
	fi
}

# Change what a test server serves (Perl against the saved test env)
env_eval() {
	as_postgres perl "$WORK/tree/test/env/agenv" eval "$WORK/env" "$1" >>"$LOG" 2>&1
}

# ---------------------------------------------------------------- setting up
heading "Setting up (Debian packages, build, test servers, a throwaway cluster)"
echo "    installing dependencies (test/install-deps.sh) ..."
bash "$ROOT/test/install-deps.sh" >>"$LOG" 2>&1
echo "    building and installing appguard ..."
make -s -C "$ROOT" WERROR=1 >>"$LOG" 2>&1
make -s -C "$ROOT" install >>"$LOG" 2>&1

# the postgres user runs everything from here, from a copy it can read
mkdir -p "$WORK/tree/test"
cp -a "$ROOT/test/env" "$ROOT/test/perl" "$ROOT/test/cluster.sh" "$WORK/tree/test/"
chown -R postgres:postgres "$WORK"

echo "    starting nginx and knotd on $NET.x.y (test/env/agenv) ..."
as_postgres perl "$WORK/tree/test/env/agenv" up "$WORK/env" >>"$LOG" 2>&1
echo "    starting a PostgreSQL 15 cluster that preloads pg_cron and appguard (test/cluster.sh) ..."
as_postgres bash "$WORK/tree/test/cluster.sh" start "$WORK/pg" "$PORT" >>"$LOG" 2>&1
{
	cat "$WORK/env/postgresql.conf"
	echo "appguard.error_uri_template = 'https://auth.example.test/appguard/suspensions/{suspension_id}?client={client_id}'"
} >>"$WORK/pg/data/postgresql.conf"
as_postgres pg_ctl -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w restart >>"$LOG" 2>&1
psql_demo -c 'CREATE EXTENSION appguard' 2>>"$LOG"
say "    ready in $((SECONDS - STARTED)) s. The appguard settings of this cluster:"
sed 's/^/      /' "$WORK/env/postgresql.conf"

# ---------------------------------------------------------------- 0. snapshots
heading "0. A real snapshot of three local test hosts"
say "appguard_snapshot_many resolves each host through knotd (c-ares), connects to the address DNS gave, does a TLS handshake (OpenSSL) and stores the facts:"
echo
show "SELECT f->>'host' AS host, f->>'status' AS status,
       f->'tls'->>'verified' AS trusted, coalesce(f->'tls'->>'verify_error', '') AS verify_error,
       f->'tls'->'leaf'->>'validation' AS class,
       coalesce(f->'tls'->'leaf'->'subject'->>'O', '') AS organization,
       f->'tls'->'leaf'->'issuer'->>'CN' AS issuer,
       left(f->'tls'->'leaf'->>'not_after', 10) AS expires,
       f->'tls'->>'version' AS tls, f->'dns'->'a'->>0 AS address,
       f->'dns'->'ownership_ids' AS ownership_txt
FROM appguard_snapshot_many(
       ARRAY['app1.example.test', 'app2.other.test', 'expired.example.test'],
       ARRAY[$TLS_PORT, $TLS_PORT, $TLS_PORT]) AS f
ORDER BY 1;"
expect "app1.example.test: trusted OV certificate of Example Health, Inc." \
	"SELECT facts->'tls'->>'verified' = 'true' AND facts->'tls'->'leaf'->>'validation' = 'OV'
	        AND facts->'tls'->'leaf'->'subject'->>'O' = 'Example Health, Inc.'
	 FROM appguard.snapshots WHERE host = 'app1.example.test'"
expect "expired.example.test: not trusted (certificate has expired)" \
	"SELECT facts->'tls'->>'verify_error' = 'certificate has expired' FROM appguard.snapshots
	 WHERE host = 'expired.example.test'"

# ---------------------------------------------------------------- 1. register
heading "1. The auth server registers an app"
say "The first redirect URI's host is the host appguard watches; its registrable domain comes from the public suffix list."
echo
show "SELECT appguard_register_client('app1', 'Example Health Patient App',
         ARRAY['https://app1.example.test:$TLS_PORT/callback']) ->> 'registrable_domain' AS registrable_domain;"
expect "client app1 registered, watching app1.example.test:$TLS_PORT" \
	"SELECT host = 'app1.example.test' AND port = $TLS_PORT FROM appguard.clients WHERE client_id = 'app1'"

# ---------------------------------------------------------------- 2. consent
heading "2. Three patients approve the app: refresh tokens are issued"
say "A trigger gives each new token its baseline: the app's latest snapshot (taken live if none is recent)."
echo
show "INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
VALUES ('rt-alice', 'app1', 'alice'), ('rt-bob', 'app1', 'bob'), ('rt-carol', 'app1', 'carol');
SELECT token_id, subject, status FROM appguard.refresh_tokens ORDER BY token_id;
SELECT token_table, token_key, state, baseline_snapshot_id FROM appguard.grant_states ORDER BY token_key;"
expect "every token has the app's snapshot as its baseline" \
	"SELECT count(*) = 3 AND bool_and(g.baseline_snapshot_id = c.last_ok_snapshot_id) FROM appguard.grant_states g
	 JOIN appguard.clients c USING (client_id)"
echo
show "SELECT appguard_check_refresh('rt-alice') AS the_token_endpoint_asks;"

# ---------------------------------------------------------------- 3. renewal
heading "3. The app renews its certificate: same identity, new key, serial, dates and intermediate CA"
env_eval '$env->cert("app1-renewal", san => ["app1.example.test"], o => "Example Health, Inc.",
	c => "US", st => "Wisconsin", l => "Verona", policies => ["OV"], issuer => "intermediate2",
	not_before => -2, not_after => 200);
	$env->tls_host("app1.example.test", addr => $env->addr_of("app1.example.test"), cert => "app1-renewal");
	$env->reload'
say "nginx now serves the renewed certificate. appguard measures the host again; the new snapshot is compared with every baseline of the app's active tokens:"
echo
show "SELECT (appguard_snapshot('app1.example.test', $TLS_PORT) ->> 'id')::bigint AS new_snapshot;
SELECT d.reason, d.severity, d.field, left(d.old_value, 30) AS old_value, left(d.new_value, 30) AS new_value
FROM appguard_diff(
       (SELECT baseline_snapshot_id FROM appguard.grant_states WHERE token_key = 'rt-alice'),
       (SELECT last_snapshot_id FROM appguard.clients WHERE client_id = 'app1'), 'app1') AS d;"
expect "the renewal differs only at severity ignore" \
	"SELECT count(*) >= 4 AND bool_and(d.severity = 'ignore') FROM appguard_diff(
	   (SELECT baseline_snapshot_id FROM appguard.grant_states WHERE token_key = 'rt-alice'),
	   (SELECT last_snapshot_id FROM appguard.clients WHERE client_id = 'app1'), 'app1') d"
expect "no token suspended, no suspension recorded" \
	"SELECT (SELECT count(*) FROM appguard.refresh_tokens WHERE status <> 'active') = 0
	    AND (SELECT count(*) FROM appguard.suspensions) = 0"
expect "the token endpoint may refresh" "SELECT appguard_check_refresh('rt-bob') = '{\"allowed\": true}'"

# ---------------------------------------------------------------- 4. new organization
heading "4. The organization in the app's certificate changes"
env_eval '$env->cert("app1-neworg", san => ["app1.example.test"], o => "Northwind Data Brokers LLC",
	c => "US", st => "Wisconsin", l => "Verona", policies => ["OV"], key_of => "app1-renewal");
	$env->tls_host("app1.example.test", addr => $env->addr_of("app1.example.test"), cert => "app1-neworg");
	$env->reload'
say "The domain, the trust and the validation class are unchanged, but the certificate now names another organization than the one the patients saw when they approved the app. The next snapshot (here taken directly; in production a pg_cron sweep) suspends their tokens:"
echo
show "LISTEN appguard_suspension;
SELECT appguard_snapshot('app1.example.test', $TLS_PORT) -> 'tls' -> 'leaf' -> 'subject' ->> 'O' AS organization_now;
SELECT t.token_id, t.status, g.suspension_id, t.error_uri
FROM appguard.refresh_tokens t JOIN appguard.grant_states g ON g.token_key = t.token_id ORDER BY 1;"
expect "all three tokens suspended, with the error_uri of the suspension" \
	"SELECT count(*) = 3 AND bool_and(t.status = 'suspended' AND t.error_uri = s.error_uri)
	 FROM appguard.refresh_tokens t JOIN appguard.grant_states g ON g.token_key = t.token_id
	      JOIN appguard.suspensions s ON s.id = g.suspension_id"
expect "one suspension, reason tls_identity_changed" \
	"SELECT count(*) = 1 AND bool_and(reasons = '{tls_identity_changed}') FROM appguard.suspensions"

echo
say "The patient's app tries to refresh. The token endpoint asks appguard and sends what it answers, with HTTP status 400:"
echo
show_raw "SELECT jsonb_pretty(appguard_check_refresh('rt-alice') -> 'error');"
expect "the token endpoint answers invalid_grant with the error_uri" \
	"SELECT r -> 'error' ->> 'error' = 'invalid_grant' AND r -> 'error' ->> 'error_uri' = t.error_uri
	 FROM appguard.refresh_tokens t, appguard_check_refresh(t.token_id) r WHERE t.token_id = 'rt-alice'"

echo
say "The app shows \"access may have been suspended\" with a link to the error_uri. That page shows what appguard_explain returns:"
echo
show "SELECT e ->> 'app_name' AS app, e ->> 'domain' AS domain, e ->> 'consented_at' AS approved,
       e ->> 'suspended_at' AS suspended
FROM appguard.suspensions s, appguard_explain(s.id) e;"
show "SELECT c ->> 'text' AS what_changed
FROM appguard.suspensions s, appguard_explain(s.id) e, jsonb_array_elements(e -> 'changes') c;"
psql_demo -At -c "SELECT e ->> 'summary', e ->> 'how_to_reapprove'
	FROM appguard.suspensions s, appguard_explain(s.id) e" -F $'\n' 2>>"$LOG" |
	fold -s -w 96 | sed 's/^/    | /'
echo
expect "the explanation says Example Health, Inc. → Northwind Data Brokers LLC" \
	"SELECT e ->> 'summary' LIKE '%Example Health, Inc. → Northwind Data Brokers LLC%'
	 FROM appguard.suspensions s, appguard_explain(s.id) e"

# ---------------------------------------------------------------- 5. re-approval
heading "5. Alice re-approves the app"
say "She signs in again and approves the app as it is now; the auth server calls appguard_reapprove, which takes a new baseline and records it:"
echo
show "SELECT appguard_reapprove('rt-alice');
SELECT t.token_id, t.status, g.baseline_snapshot_id
FROM appguard.refresh_tokens t JOIN appguard.grant_states g ON g.token_key = t.token_id ORDER BY 1;"
expect "alice's token is active again with a new baseline" \
	"SELECT t.status = 'active' AND g.baseline_snapshot_id = (SELECT last_ok_snapshot_id FROM appguard.clients
	                                                          WHERE client_id = 'app1')
	 FROM appguard.refresh_tokens t JOIN appguard.grant_states g ON g.token_key = t.token_id
	 WHERE t.token_id = 'rt-alice'"
expect "bob's and carol's stay suspended until they decide" \
	"SELECT count(*) = 2 FROM appguard.refresh_tokens WHERE status = 'suspended'"
echo
say "The next sweep (what pg_cron runs: CALL appguard_sweep(max_age, budget)) measures the app again and leaves Alice alone:"
echo
show "CALL appguard_sweep('0 s', '30 s');
SELECT state, measured, drifted, suspended, held FROM appguard.sweeps;
SELECT appguard_check_refresh('rt-alice') AS alice, appguard_check_refresh('rt-bob') -> 'allowed' AS bob_allowed;"
expect "after the sweep Alice may refresh, Bob may not" \
	"SELECT appguard_check_refresh('rt-alice') = '{\"allowed\": true}'
	    AND appguard_check_refresh('rt-bob') -> 'error' ->> 'error' = 'invalid_grant'"

heading "The audit trail"
show "SELECT id, kind, token_key, snapshot_id, suspension_id FROM appguard.events ORDER BY id;"

heading "The demo behaved as expected ($((SECONDS - STARTED)) s)"
