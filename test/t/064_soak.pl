# Concurrency soak: pgbench clients run refresh checks on random tokens of
# appguard.refresh_tokens, and others on random rows of an auth server's
# own token table protected with appguard_protect (another schema, other
# column names, a 1/0 status, owned by the auth server's role), while
# another pgbench client runs sweeps whose snapshots flip hosts'
# certificate organization (so they suspend the hosts' tokens and rows),
# drift found outside a sweep (suspends at once), and re-approvals of
# suspended tokens and rows; the auth server also re-enables suspended
# rows itself now and then (its own decision: appguard follows, and the
# next check of such a row suspends it again if its app still drifts from
# the row's baseline).  No deadlock (no pgbench failure, no "deadlock
# detected" in the server log), and no suspended token or row is ever
# reported allowed: each check records its answer together with the
# status read in the same transaction, after the check.
#   appguard.refresh_tokens: an allowed check has updated the token's row
#   (last_refreshed_at, status re-checked), so a suspension cannot commit
#   before that transaction ends: the status it reads must be 'active'.
#   The protected table: the auth server's refresh transaction, as the
#   auth server's role (idp.refresh_grant) -- SELECT ... FOR UPDATE its
#   row, the check, its UPDATE of the row when allowed, then its status
#   column read again.  appguard suspends a host row by updating it, and
#   re-approval and the host's re-enabling update it too, all of which
#   wait for the row lock; so the status read after the check is the
#   status the check was made against (or the check's own suspension of
#   the row): an allowed answer with any status but the active value (1)
#   is wrong, and so is a refusal with any status but the suspended one
#   (0).  The check's slow path never waits for the client's lock (a
#   drift evaluation holding it may be waiting for this very row): it
#   fails with SQLSTATE 55P03 instead, which the host answers as a
#   temporary error ("busy": HTTP 503 with Retry-After, the grant not
#   used; the app retries).  The host asks in a subtransaction so that it
#   can record that answer; the row lock is taken before it, by the
#   transaction, so it is kept when the subtransaction is rolled back.
#   Busy is neither allowed nor refused: it is wrong if the host used the
#   grant, or if the row was not active before and after the check (a
#   suspended row is refused at once; the failed check changed nothing).
# Every re-enabling of a row (host status 0 -> 1, logged by the host's own
# trigger) is a re-approval or one of the host's re-enables, and appguard
# logged each of the latter (host_reactivated).  At the end, appguard's
# state of every row agrees with the host's status.
# Rotations (issue 12): two more pgbench clients rotate the tokens of
# other subjects of the same apps ('rotating 1', 'rotating 2': their
# consents are drifted, swept and re-approved like the others), as an auth
# server with one-time-use refresh tokens does (public.rotate): lock the
# subject's newest active token, ask the refresh check, and when allowed
# insert its successor (same client and subject) and revoke it.  Checks:
# an allowed rotation read its old token active after the check, no
# rotation failed or deadlocked, the consent's rows stay one chain (at most
# one active row per consent), and at the end no active token of
# appguard.refresh_tokens rests on a baseline whose latest suspension is
# applied unless it was re-approved after that suspension (a rotated token
# that missed a fan-out would: see test/isolation/specs/consent-rotation-fanout.spec).
# AG_SOAK_ROTATE=0 leaves the rotations out.
# AG_SOAK_HOST_NO_LOCK=1 runs the host's transaction without FOR UPDATE (a
# control: then the oracle must report wrong answers).
# AG_SOAK_HOST_REENABLE=0 leaves out the host's re-enables (then every
# re-enabled row was re-approved).
#
# Snapshots are handcrafted (sql/lifecycle_helpers.inc), so no network is
# used and the soak measures appguard's locking alone.
use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $t0 = time;
my $seconds = $ENV{AG_SOAK_SECONDS} // 20;
my $hosts = 20;
my $per_host = 5;
my $tokens = $hosts * $per_host;
my $rows = $hosts * $per_host;		# rows of the protected table
my $host_lock = $ENV{AG_SOAK_HOST_NO_LOCK} ? 'false' : 'true';
my $host_reenable = $ENV{AG_SOAK_HOST_REENABLE} // 1;
my $rotate = $ENV{AG_SOAK_ROTATE} // 1;
my $rotating = 2;					# rotating subjects per app

my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init;
# every sweep's drift is applied (no mass-drift hold): the soak is about
# suspensions racing checks; appguard.refresh_max_age = 0 (the default):
# checks never measure live
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'appguard'
appguard.mass_drift_threshold = 1.0
max_connections = 25
log_lock_waits = on
deadlock_timeout = 100ms
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION appguard');
$node->safe_psql('postgres', slurp_file('sql/lifecycle_helpers.inc'));
$node->safe_psql('postgres', qq{
SELECT count(appguard_register_client('c' || i, 'App ' || i, ARRAY['https://h' || i || '.soak.test/']))
FROM generate_series(1, $hosts) i;
SELECT count(public.snap('h' || i || '.soak.test', 443,
							jsonb_build_object('tls.leaf.subject.O', 'Org 0')))
FROM generate_series(1, $hosts) i;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
SELECT 'tok-' || ((i - 1) * $per_host + j), 'c' || i, 'patient ' || j
FROM generate_series(1, $hosts) i, generate_series(1, $per_host) j;
CREATE TABLE public.soak_answers (
	id bigserial PRIMARY KEY,
	token_id text NOT NULL,
	allowed boolean NOT NULL,
	answer jsonb NOT NULL,
	status text NOT NULL,			-- the token's status, read after the check
									-- by the next statement of its transaction
	at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE public.soak_sweeps (id bigserial PRIMARY KEY, kind text NOT NULL, result jsonb);

-- Rotating subjects: one token each to begin with
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
SELECT 'rot-' || i || '-' || k || '-0', 'c' || i, 'rotating ' || k
FROM generate_series(1, $hosts) i, generate_series(1, $rotating) k;
CREATE SEQUENCE public.soak_rot_seq;
CREATE TABLE public.soak_rotations (
	id bigserial PRIMARY KEY,
	client_id text NOT NULL,
	subject text NOT NULL,
	old_token text,					-- NULL: no active token to rotate
	new_token text,
	answer text NOT NULL CHECK (answer IN ('none', 'allowed', 'refused', 'busy')),
	old_status text,				-- the old token's status read after the check
	new_status text,				-- the new token's status at the end of the rotation
	at timestamptz NOT NULL DEFAULT clock_timestamp());
-- A rotation as an auth server with one-time-use refresh tokens runs it
CREATE FUNCTION public.rotate(p_client text, p_subject text) RETURNS text
LANGUAGE plpgsql AS \$\$
DECLARE
	old text;
	new text;
	answer text;
	st text;
	new_st text;
BEGIN
	SELECT t.token_id INTO old FROM appguard.refresh_tokens t
	WHERE t.client_id = p_client AND t.subject = p_subject AND t.status = 'active'
	ORDER BY t.created_at DESC, t.token_id DESC LIMIT 1 FOR UPDATE;
	IF old IS NULL THEN
		INSERT INTO public.soak_rotations (client_id, subject, answer) VALUES (p_client, p_subject, 'none');
		RETURN 'none';
	END IF;
	BEGIN
		answer := CASE WHEN (appguard_check_refresh(old) ->> 'allowed')::boolean THEN 'allowed' ELSE 'refused' END;
	EXCEPTION WHEN lock_not_available THEN
		answer := 'busy';
	END;
	SELECT t.status INTO st FROM appguard.refresh_tokens t WHERE t.token_id = old;
	IF answer = 'allowed' THEN
		new := 'rot-' || right(p_client, -1) || '-' || right(p_subject, 1) || '-' || nextval('public.soak_rot_seq');
		INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES (new, p_client, p_subject);
		UPDATE appguard.refresh_tokens t SET status = 'revoked' WHERE t.token_id = old;
		SELECT t.status INTO new_st FROM appguard.refresh_tokens t WHERE t.token_id = new;
	END IF;
	INSERT INTO public.soak_rotations (client_id, subject, old_token, new_token, answer, old_status, new_status)
	VALUES (p_client, p_subject, old, new, answer, st, new_st);
	RETURN answer;
END
\$\$;

-- The auth server: its role owns its schema and token table, which
-- appguard protects; every change of a row's status is logged by the
-- auth server's own trigger (it also runs inside appguard's writes, as
-- the table's owner)
CREATE ROLE soak_idp LOGIN IN ROLE appguard_auth_server;
CREATE SCHEMA idp AUTHORIZATION soak_idp;
SET ROLE soak_idp;
CREATE TABLE idp.oauth_grants (
	grant_no bigint PRIMARY KEY,
	app_ref text NOT NULL,
	live smallint NOT NULL DEFAULT 1,		-- 1 usable, 0 suspended
	why_uri text,
	used_at timestamptz);
CREATE TABLE idp.live_changes (grant_no bigint NOT NULL, old_live smallint, new_live smallint);
CREATE FUNCTION idp.log_live() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	INSERT INTO idp.live_changes VALUES (NEW.grant_no, OLD.live, NEW.live);
	RETURN NULL;
END
\$\$;
CREATE TRIGGER log_live AFTER UPDATE OF live ON idp.oauth_grants
	FOR EACH ROW WHEN (OLD.live IS DISTINCT FROM NEW.live) EXECUTE FUNCTION idp.log_live();
INSERT INTO idp.oauth_grants (grant_no, app_ref)
SELECT (i - 1) * $per_host + j, 'c' || i FROM generate_series(1, $hosts) i, generate_series(1, $per_host) j;
CREATE TABLE idp.soak_answers (
	id bigserial PRIMARY KEY,
	grant_no bigint NOT NULL,
	answer text NOT NULL CHECK (answer IN ('allowed', 'refused', 'busy')),
	body jsonb NOT NULL,			-- appguard's answer, or the busy error
	live_before smallint,			-- the host's status, read before the check
	live smallint,					-- and after it, in the same transaction
	used boolean NOT NULL,			-- the host used the grant (new tokens issued)
	at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE idp.host_reenables (grant_no bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());

-- The auth server's refresh transaction: lock the grant's row (p_lock),
-- ask appguard, use the grant if allowed, read the status again, record.
CREATE FUNCTION idp.refresh_grant(p_grant bigint, p_lock boolean) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS \$\$
DECLARE
	live_before smallint;
	live_after smallint;
	body jsonb;
	answer text;
	used boolean := false;
	state text;
	msg text;
BEGIN
	IF p_lock THEN
		SELECT g.live INTO live_before FROM idp.oauth_grants g WHERE g.grant_no = p_grant FOR UPDATE;
	ELSE
		SELECT g.live INTO live_before FROM idp.oauth_grants g WHERE g.grant_no = p_grant;
	END IF;
	-- A subtransaction, so that a busy check can be answered and recorded.
	-- The row lock above is the transaction's and outlives its rollback (a
	-- lock taken inside the block would be released with it).
	BEGIN
		-- (the function's search_path is pinned: appguard's API by its
		-- schema, the extension's, public here)
		body := public.appguard_check_refresh('idp.oauth_grants', p_grant::text);
		answer := CASE WHEN (body ->> 'allowed')::boolean THEN 'allowed' ELSE 'refused' END;
	EXCEPTION WHEN lock_not_available THEN
		GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		-- HTTP 503 with Retry-After; the grant is not used
		body := jsonb_build_object('error', 'temporarily_unavailable', 'sqlstate', state, 'message', msg);
		answer := 'busy';
	END;
	IF answer = 'allowed' THEN
		UPDATE idp.oauth_grants g SET used_at = now() WHERE g.grant_no = p_grant;
		used := FOUND;
	END IF;
	SELECT g.live INTO live_after FROM idp.oauth_grants g WHERE g.grant_no = p_grant;
	INSERT INTO idp.soak_answers (grant_no, answer, body, live_before, live, used)
	VALUES (p_grant, answer, body, live_before, live_after, used);
	RETURN answer;
END
\$\$;
RESET ROLE;
SELECT appguard_protect('idp.oauth_grants', 'app_ref', 'live', 'why_uri', '1', '0') ->> 'active_rows';
});
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM appguard.refresh_tokens t
	  JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass AND g.token_key = t.token_id
	  WHERE t.status = 'active' AND g.baseline_snapshot_id IS NOT NULL AND t.token_id LIKE 'tok-%'}),
	$tokens, "$tokens active tokens with a baseline");
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM appguard.grant_states WHERE token_table = 'idp.oauth_grants'::regclass
	  AND state = 'active' AND baseline_snapshot_id IS NOT NULL}),
	$rows, "$rows active rows of the protected table idp.oauth_grants with a baseline");

my $dir = PostgreSQL::Test::Utils::tempdir;
# a refresh check and the token's status, in one transaction
write_file("$dir/check.sql", qq{\\set n random(1, $tokens)
BEGIN;
INSERT INTO public.soak_answers (token_id, allowed, answer, status)
SELECT 'tok-' || :n, (a ->> 'allowed')::boolean, a, 'not read'
FROM appguard_check_refresh('tok-' || :n) a
RETURNING id \\gset
UPDATE public.soak_answers s SET status = t.status
FROM appguard.refresh_tokens t WHERE s.id = :id AND t.token_id = s.token_id;
COMMIT;
});
# the auth server's refresh transaction on its own table, as its role
write_file("$dir/host_check.sql", qq{\\set n random(1, $rows)
SELECT idp.refresh_grant(:n, $host_lock);
});
# the auth server re-enables a suspended row itself (its own decision);
# only a row still suspended when its lock is granted counts
write_file("$dir/host_reenable.sql", q{WITH r AS (
	UPDATE idp.oauth_grants g SET live = 1
	WHERE g.grant_no = (SELECT grant_no FROM idp.oauth_grants WHERE live = 0 ORDER BY random() LIMIT 1)
	  AND g.live = 0
	RETURNING g.grant_no)
INSERT INTO idp.host_reenables (grant_no) SELECT grant_no FROM r;
});
# a sweep: every host measured, one in four with its organization flipped
# (drift from the baseline of tokens issued or re-approved before the flip)
write_file("$dir/sweep.sql", q{SELECT set_config('appguard_lifecycle.sweep_id', appguard_sweep_begin('0', '1 hour')::text, false) IS NOT NULL AS begun;
SELECT count(public.snap(h, 443, jsonb_build_object('tls.leaf.subject.O',
		CASE WHEN random() < 0.25 THEN 'Org ' || (1 - right(o, 1)::int) ELSE o END)))
FROM (SELECT c.host AS h,
			 (SELECT s.facts #>> '{tls,leaf,subject,O}' FROM appguard.snapshots s
			  WHERE s.host = c.host ORDER BY s.id DESC LIMIT 1) AS o
	  FROM appguard.clients c ORDER BY random()) x;
INSERT INTO public.soak_sweeps (kind, result)
SELECT 'sweep', appguard_sweep_finish(current_setting('appguard_lifecycle.sweep_id')::bigint);
});
# a rotation of a random rotating subject
write_file("$dir/rotate.sql", qq{\\set h random(1, $hosts)
\\set k random(1, $rotating)
SELECT public.rotate('c' || :h, 'rotating ' || :k);
});
# drift found outside a sweep: applied at once
write_file("$dir/drift.sql", qq{\\set h random(1, $hosts)
INSERT INTO public.soak_sweeps (kind, result)
SELECT 'drift', jsonb_build_object('snapshot', public.snap('h' || :h || '.soak.test', 443,
	jsonb_build_object('tls.leaf.subject.O', 'Org ' || (1 - right(o, 1)::int))))
FROM (SELECT s.facts #>> '{tls,leaf,subject,O}' AS o FROM appguard.snapshots s
	  WHERE s.host = 'h' || :h || '.soak.test' ORDER BY s.id DESC LIMIT 1) x;
});
# re-approval of the suspended tokens and rows, one at a time in random order
write_file("$dir/reapprove.sql", q{INSERT INTO public.soak_sweeps (kind, result)
SELECT 'reapprove', jsonb_build_object('reapproved',
	count(*) FILTER (WHERE (appguard_reapprove(token_id) ->> 'reapproved')::boolean))
FROM (SELECT token_id FROM appguard.refresh_tokens WHERE status = 'suspended' ORDER BY random()) x;
INSERT INTO public.soak_sweeps (kind, result)
SELECT 'reapprove_rows', jsonb_build_object('reapproved',
	count(*) FILTER (WHERE (appguard_reapprove('idp.oauth_grants', token_key) ->> 'reapproved')::boolean))
FROM (SELECT token_key FROM appguard.grant_states
	  WHERE token_table = 'idp.oauth_grants'::regclass AND state = 'suspended' ORDER BY random()) x;
});

my @conn = ('-h', $node->host, '-p', $node->port, 'postgres');
my ($check_out, $check_err, $host_out, $host_err, $sweep_out, $sweep_err) = ('', '', '', '', '', '');
my ($rot_out, $rot_err) = ('', '');
my $checks = IPC::Run::start(
	[ 'pgbench', '-n', '--failures-detailed', '-c', '4', '-j', '2', '-T', $seconds, '-f', "$dir/check.sql", @conn ],
	'>', \$check_out, '2>', \$check_err);
my $host_checks = IPC::Run::start(
	[
		'pgbench', '-n', '--failures-detailed', '-c', '3', '-j', '1', '-T', $seconds, '-f', "$dir/host_check.sql\@20",
		($host_reenable ? ('-f', "$dir/host_reenable.sql\@1") : ()), '-U', 'soak_idp', @conn
	],
	'>', \$host_out, '2>', \$host_err);
my $sweeps = IPC::Run::start(
	[
		'pgbench', '-n', '--failures-detailed', '-c', '1', '-T', $seconds,
		'-f', "$dir/sweep.sql\@2", '-f', "$dir/drift.sql\@1", '-f', "$dir/reapprove.sql\@2", @conn
	],
	'>', \$sweep_out, '2>', \$sweep_err);
my $rotations = $rotate
  ? IPC::Run::start(
	[ 'pgbench', '-n', '--failures-detailed', '-c', '2', '-j', '1', '-T', $seconds, '-f', "$dir/rotate.sql", @conn ],
	'>', \$rot_out, '2>', \$rot_err)
  : undef;
my $check_ok = $checks->finish;
my $rot_ok = $rotations ? $rotations->finish : 1;
my $host_ok = $host_checks->finish;
my $sweep_ok = $sweeps->finish;
note "checks:\n$check_out$check_err";
note "checks on the protected table:\n$host_out$host_err";
note "sweeps:\n$sweep_out$sweep_err";
note "rotations:\n$rot_out$rot_err" if $rotate;

sub pgbench_figures
{
	my ($out) = @_;
	my ($done) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	return ($done // 0, $failed);
}
my ($check_tx, $check_failed) = pgbench_figures($check_out);
my ($host_tx, $host_failed) = pgbench_figures($host_out);
# with a second script, the refresh transactions are the first script's
$host_tx = $1 if $host_out =~ /SQL script 1: \S+host_check\.sql\n - weight: [^\n]*\n - (\d+) transactions/;
my ($sweep_tx, $sweep_failed) = pgbench_figures($sweep_out);
my ($rot_tx, $rot_failed) = $rotate ? pgbench_figures($rot_out) : (0, 0);
ok($check_ok, 'pgbench with the refresh checks exits 0');
ok($host_ok, 'pgbench with the refresh checks on the protected table exits 0');
ok($sweep_ok, 'pgbench with the sweeps and re-approvals exits 0');
is($check_failed, 0, 'no refresh check transaction failed');
is($host_failed, 0, 'no refresh transaction on the protected table failed');
is($sweep_failed, 0, 'no sweep, drift or re-approval transaction failed');
ok($rot_ok, 'pgbench with the rotations exits 0');
is($rot_failed, 0, 'no rotation transaction failed');
unlike($check_err . $host_err . $sweep_err . $rot_err, qr/deadlock|ERROR/i, 'pgbench reports no error');
my $log = slurp_file($node->logfile);
my $deadlocks = () = $log =~ /deadlock detected/g;
# (pgbench counts a transaction that failed with a deadlock, and goes on)
my @pgbench_deadlocks = ($check_out . $host_out . $sweep_out . $rot_out) =~ /^number of deadlock failures: (\d+)/mg;
my $pgbench_deadlocks = 0;
$pgbench_deadlocks += $_ for @pgbench_deadlocks;
is($deadlocks, 0, 'no "deadlock detected" in the server log');
is(scalar(@pgbench_deadlocks), $rotate ? 4 : 3, 'every pgbench run counted its deadlock failures');
is($pgbench_deadlocks, 0, 'no deadlock reported by pgbench');
my $errors = grep { /\bERROR:/ } split /\n/, $log;
is($errors, 0, 'no ERROR in the server log');

my %f = split /\|/, $node->safe_psql('postgres', q{
SELECT 'answers|' || count(*) || '|allowed|' || count(*) FILTER (WHERE allowed)
	|| '|refused_suspended|' || count(*) FILTER (WHERE NOT allowed AND answer #>> '{error,error_uri}' IS NOT NULL)
	|| '|wrong|' || count(*) FILTER (WHERE allowed AND status = 'suspended')
	|| '|wrong_other|' || count(*) FILTER (WHERE allowed AND status <> 'active')
	|| '|refusal_without_uri|' || count(*) FILTER (WHERE NOT allowed AND answer #>> '{error,error_uri}' IS NULL)
FROM public.soak_answers});
# the protected table: live_before and live are the host's status before
# and after the check, under the host's row lock
my %h = split /\|/, $node->safe_psql('postgres', q{
SELECT 'answers|' || count(*) || '|allowed|' || count(*) FILTER (WHERE answer = 'allowed')
	|| '|refused|' || count(*) FILTER (WHERE answer = 'refused')
	|| '|busy|' || count(*) FILTER (WHERE answer = 'busy')
	|| '|refused_suspended|' || count(*) FILTER (WHERE answer = 'refused' AND body #>> '{error,error_uri}' IS NOT NULL)
	|| '|suspended_by_check|' || count(*) FILTER (WHERE answer = 'refused' AND live_before = 1 AND live = 0)
	|| '|wrong|' || count(*) FILTER (WHERE answer = 'allowed' AND live = 0)
	|| '|wrong_other|' || count(*) FILTER (WHERE answer = 'allowed' AND live IS DISTINCT FROM 1)
	|| '|refused_live|' || count(*) FILTER (WHERE answer = 'refused' AND live IS DISTINCT FROM 0)
	|| '|busy_wrong|' || count(*) FILTER (WHERE answer = 'busy'
										 AND (used OR (live_before, live) IS DISTINCT FROM (1, 1)))
	|| '|busy_other|' || count(*) FILTER (WHERE answer = 'busy'
										  AND (body ->> 'sqlstate' IS DISTINCT FROM '55P03'
											   OR body ->> 'message' NOT LIKE 'appguard is busy with the grants of client %'))
	|| '|used_wrong|' || count(*) FILTER (WHERE used <> (answer = 'allowed'))
	|| '|changed_otherwise|' || count(*) FILTER (WHERE live_before IS DISTINCT FROM live
												 AND NOT (answer = 'refused' AND live_before = 1 AND live = 0))
	|| '|refusal_without_uri|' || count(*) FILTER (WHERE answer = 'refused' AND body #>> '{error,error_uri}' IS NULL)
	|| '|suspended|' || (SELECT count(*) FROM idp.live_changes WHERE old_live = 1 AND new_live = 0)
	|| '|reenabled|' || (SELECT count(*) FROM idp.live_changes WHERE old_live = 0 AND new_live = 1)
	|| '|host_reenables|' || (SELECT count(*) FROM idp.host_reenables)
	|| '|host_reactivated_events|' || (SELECT count(*) FROM appguard.events
									   WHERE kind = 'host_reactivated' AND token_table = 'idp.oauth_grants')
	|| '|reapproved_events|' || (SELECT count(*) FROM appguard.events
								 WHERE kind = 'reapproved' AND token_table = 'idp.oauth_grants')
	|| '|out_of_step|' || (SELECT count(*) FROM idp.oauth_grants g
						   LEFT JOIN appguard.grant_states pr ON pr.token_table = 'idp.oauth_grants'::regclass
														   AND pr.token_key = g.grant_no::text
						   WHERE (g.live, pr.state) IS DISTINCT FROM (1::smallint, 'active')
							 AND (g.live, pr.state) IS DISTINCT FROM (0::smallint, 'suspended'))
FROM idp.soak_answers});
my %s = split /\|/, $node->safe_psql('postgres', q{
SELECT 'sweeps|' || count(*) FILTER (WHERE kind = 'sweep')
	|| '|drifts|' || count(*) FILTER (WHERE kind = 'drift')
	|| '|reapproved|' || coalesce(sum((result ->> 'reapproved')::int) FILTER (WHERE kind = 'reapprove'), 0)
	|| '|reapproved_rows|' || coalesce(sum((result ->> 'reapproved')::int) FILTER (WHERE kind = 'reapprove_rows'), 0)
	|| '|suspended_by_sweeps|' || coalesce(sum((result ->> 'tokens_suspended')::int), 0)
	|| '|suspensions|' || (SELECT count(*) FROM appguard.suspensions WHERE state = 'applied')
FROM public.soak_sweeps});
# Rotations, and the consent invariant over every token of appguard.refresh_tokens
my %r = split /\|/, $node->safe_psql('postgres', q{
SELECT 'rotations|' || (SELECT count(*) FROM public.soak_rotations)
	|| '|rotated|' || (SELECT count(*) FROM public.soak_rotations WHERE answer = 'allowed')
	|| '|refused|' || (SELECT count(*) FROM public.soak_rotations WHERE answer = 'refused')
	|| '|busy|' || (SELECT count(*) FROM public.soak_rotations WHERE answer = 'busy')
	|| '|none|' || (SELECT count(*) FROM public.soak_rotations WHERE answer = 'none')
	|| '|allowed_not_active|' || (SELECT count(*) FROM public.soak_rotations
								 WHERE answer = 'allowed' AND old_status IS DISTINCT FROM 'active')
	|| '|inserted_suspended|' || (SELECT count(*) FROM appguard.events WHERE kind = 'grant_joined_suspension')
	|| '|rotated_reapproved|' || (SELECT count(*) FROM appguard.events
								  WHERE kind = 'reapproved' AND token_key LIKE 'rot-%' AND token_key NOT LIKE '%-0')
	|| '|chains_forked|' || (SELECT count(*) FROM (SELECT t.client_id, t.subject FROM appguard.refresh_tokens t
												   WHERE t.status = 'active' GROUP BY 1, 2 HAVING count(*) > 1) x)
	|| '|active_on_suspended|' || (SELECT count(*) FROM appguard.refresh_tokens t
		JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass AND g.token_key = t.token_id
		CROSS JOIN LATERAL (SELECT s.state, s.applied_at FROM appguard.suspensions s
							WHERE s.client_id = g.client_id AND s.baseline_snapshot_id = g.baseline_snapshot_id
							ORDER BY s.id DESC LIMIT 1) s
		WHERE t.status = 'active' AND s.state = 'applied'
		  AND s.applied_at > coalesce(g.reapproved_at, '-infinity'))
	|| '|active_on_suspended_rotated|' || (SELECT count(*) FROM appguard.refresh_tokens t
		JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass AND g.token_key = t.token_id
		CROSS JOIN LATERAL (SELECT s.state, s.applied_at FROM appguard.suspensions s
							WHERE s.client_id = g.client_id AND s.baseline_snapshot_id = g.baseline_snapshot_id
							ORDER BY s.id DESC LIMIT 1) s
		WHERE t.status = 'active' AND s.state = 'applied' AND t.token_id LIKE 'rot-%'
		  AND s.applied_at > coalesce(g.reapproved_at, '-infinity'))
	|| '|tokens_out_of_step|' || (SELECT count(*) FROM appguard.refresh_tokens t
		JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass AND g.token_key = t.token_id
		WHERE (t.status, g.state) NOT IN (('active', 'active'), ('suspended', 'suspended'), ('revoked', 'inactive')))
	|| '|consent_baseline_off|' || (SELECT count(*) FROM appguard.refresh_tokens t
		JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass AND g.token_key = t.token_id
		JOIN appguard.consents k ON k.client_id = t.client_id AND k.subject = t.subject
		WHERE t.status = 'active' AND g.baseline_snapshot_id IS DISTINCT FROM k.baseline_snapshot_id)});
note 'rotations: ' . join ', ', map { "$_ $r{$_}" } sort keys %r;
if ($rotate)
{
	is($r{rotations}, $rot_tx, 'every committed rotation recorded itself');
	cmp_ok($r{rotated}, '>', 0, 'tokens were rotated');
	# a consent whose baseline is suspended has no active token left (the
	# fan-out and the tokens joining it reach them all): its rotations find
	# none; a refused check is rarer (a suspension still pending)
	cmp_ok($r{none} + $r{refused}, '>', 0,
		'some rotations found their consent suspended (no active token, or refused)');
	cmp_ok($r{rotated_reapproved}, '>', 0, 'rotated tokens were re-approved');
	is($r{allowed_not_active}, 0, 'no rotation was allowed from a token that was not active after the check');
	is($r{chains_forked}, 0, 'at most one active token per consent (the rotations serialise on the newest row)');
}
is($r{active_on_suspended}, 0,
	'no active token rests on a baseline whose latest suspension is applied, unless re-approved after it');
is($r{tokens_out_of_step}, 0, "at the end, appguard's state of every token agrees with its status");
is($r{consent_baseline_off}, 0, "every active token's baseline is its consent's");

note join ', ', map { "$_ $f{$_}" } sort keys %f;
note 'protected table: ' . join ', ', map { "$_ $h{$_}" } sort keys %h;
note join ', ', map { "$_ $s{$_}" } sort keys %s;

is($f{answers}, $check_tx, 'every committed check recorded its answer');
cmp_ok($f{allowed}, '>', 0, 'some checks were allowed');
cmp_ok($f{refused_suspended}, '>', 0, 'some checks were refused as suspended');
is($f{wrong}, 0, 'no suspended token was ever reported allowed');
is($f{wrong_other}, 0, 'no token reported allowed was anything but active');
is($f{refusal_without_uri}, 0, 'every refusal is a suspension (with its error_uri): no token was revoked');
cmp_ok($s{sweeps}, '>', 0, 'sweeps ran');
cmp_ok($s{suspended_by_sweeps}, '>', 0, 'sweeps suspended tokens');
cmp_ok($s{drifts}, '>', 0, 'drift outside a sweep ran');
cmp_ok($s{reapproved}, '>', 0, 'suspended tokens were re-approved');

is($h{answers}, $host_tx, 'protected table: every committed refresh transaction recorded its answer');
cmp_ok($h{allowed}, '>', 0, 'protected table: some checks were allowed');
cmp_ok($h{refused_suspended}, '>', 0, 'protected table: some checks were refused as suspended');
is($h{wrong}, 0, 'protected table: no row was reported allowed while its status was the suspended value');
is($h{wrong_other}, 0, 'protected table: no row reported allowed had any status but the active value');
is($h{refusal_without_uri}, 0, 'protected table: every refusal is a suspension (with its error_uri)');
is($h{refused_live}, 0, 'protected table: no row was refused while the host had it active');
is($h{busy_other}, 0, "protected table: every busy answer is appguard's 55P03 \"busy with the grants of client\"");
is($h{busy_wrong}, 0, 'protected table: no busy answer used the grant, or was given for a row not active before and after');
is($h{used_wrong}, 0, 'protected table: the host used the grant exactly when the check allowed it');
is($h{changed_otherwise}, 0,
	"protected table: under the host's row lock the status changed only by the check's own suspension");
cmp_ok($h{suspended}, '>', 0, 'protected table: sweeps and drifts suspended rows (the host saw 1 -> 0)');
cmp_ok($s{reapproved_rows}, '>', 0, 'protected table: suspended rows were re-approved');
is($h{reapproved_events}, $s{reapproved_rows}, 'protected table: every re-approval of a row is in appguard.events');
is($h{reenabled}, $s{reapproved_rows} + $h{host_reenables},
	"protected table: every re-enabled row (the host's log: 0 -> 1) is a re-approval or one of the host's re-enables");
is($h{host_reactivated_events}, $h{host_reenables},
	"protected table: appguard followed every re-enable of the host's (host_reactivated)");
if ($host_reenable)
{
	cmp_ok($h{host_reenables}, '>', 0, 'protected table: the host re-enabled suspended rows');
	cmp_ok($h{busy}, '>', 0,
		'protected table: some checks were busy (a re-enabled row while an evaluation of its app held the lock)');
	cmp_ok($h{suspended_by_check}, '>', 0,
		"protected table: checks of re-enabled rows whose app still drifts suspended them again");
}
else
{
	is($h{host_reenables}, 0, 'protected table: the host re-enabled nothing');
}
is($h{out_of_step}, 0, "protected table: at the end, appguard's state of every row agrees with the host's status");
is($node->safe_psql('postgres', q{SELECT count(*) FROM appguard.sweeps WHERE state = 'running'}),
	0, 'no sweep left running');

my $elapsed = time - $t0;
note sprintf('soak: %d s, %d refresh checks (%d allowed, %d refused as suspended), '
	  . '%d refresh transactions on the protected table (%d allowed, %d refused as suspended, '
	  . '%d of them suspended by the check itself, %d busy), '
	  . '%d sweep-client transactions (%d sweeps, %d drifts outside a sweep, %d tokens and rows suspended by sweeps, '
	  . '%d applied suspensions, %d token re-approvals; protected rows: %d suspended, %d re-approved, '
	  . '%d re-enabled by the host), '
	  . '%d deadlocks (%d in pgbench), %d wrong answers (%d on the protected table, %d busy), '
	  . '%d rows out of step; %d rotations (%d rotated, %d refused, %d busy), '
	  . '%d tokens inserted suspended, %d active on a suspended baseline; test %.1f s',
	$seconds, $check_tx, $f{allowed}, $f{refused_suspended},
	$host_tx, $h{allowed}, $h{refused_suspended}, $h{suspended_by_check}, $h{busy},
	$sweep_tx, $s{sweeps}, $s{drifts}, $s{suspended_by_sweeps}, $s{suspensions}, $s{reapproved},
	$h{suspended}, $s{reapproved_rows}, $h{host_reenables},
	$deadlocks, $pgbench_deadlocks,
	$f{wrong_other} + $h{wrong_other} + $h{refused_live} + $h{busy_wrong},
	$h{wrong_other} + $h{refused_live} + $h{busy_wrong}, $h{busy_wrong},
	$h{out_of_step}, $r{rotations}, $r{rotated}, $r{refused}, $r{busy},
	$r{inserted_suspended}, $r{active_on_suspended}, $elapsed);

$node->stop;
done_testing();

sub write_file
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or die "cannot write $path: $!";
	print $fh $text;
	close $fh or die "cannot write $path: $!";
}
