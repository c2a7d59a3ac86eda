# Concurrency soak: pgbench clients run refresh checks on random tokens of
# appguard.refresh_tokens while another pgbench client runs sweeps whose
# snapshots flip hosts' certificate organization (so they suspend the
# hosts' tokens), drift found outside a sweep (suspends at once), and
# re-approvals of suspended tokens.  No deadlock (no pgbench failure, no
# "deadlock detected" in the server log), and no suspended token is ever
# reported allowed: each check records its answer together with the
# token's status read in the same transaction, after the check.  An
# allowed check has updated the token's row (last_refreshed_at, status
# re-checked), so a suspension cannot commit before that transaction ends:
# the status it reads must be 'active'.
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

my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init;
# every sweep's drift is applied (no mass-drift hold): the soak is about
# suspensions racing checks; appguard.refresh_max_age = 0 (the default):
# checks never measure live
$node->append_conf('postgresql.conf', q{
appguard.mass_drift_threshold = 1.0
max_connections = 20
log_lock_waits = on
deadlock_timeout = 100ms
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION appguard');
$node->safe_psql('postgres', slurp_file('sql/lifecycle_helpers.inc'));
$node->safe_psql('postgres', qq{
SELECT count(appguard.appguard_register_client('c' || i, 'App ' || i, ARRAY['https://h' || i || '.soak.test/']))
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
});
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM appguard.refresh_tokens WHERE status = 'active' AND baseline_snapshot_id IS NOT NULL}),
	$tokens, "$tokens active tokens with a baseline");

my $dir = PostgreSQL::Test::Utils::tempdir;
# a refresh check and the token's status, in one transaction
write_file("$dir/check.sql", qq{\\set n random(1, $tokens)
BEGIN;
INSERT INTO public.soak_answers (token_id, allowed, answer, status)
SELECT 'tok-' || :n, (a ->> 'allowed')::boolean, a, 'not read'
FROM appguard.appguard_check_refresh('tok-' || :n) a
RETURNING id \\gset
UPDATE public.soak_answers s SET status = t.status
FROM appguard.refresh_tokens t WHERE s.id = :id AND t.token_id = s.token_id;
COMMIT;
});
# a sweep: every host measured, one in four with its organization flipped
# (drift from the baseline of tokens issued or re-approved before the flip)
write_file("$dir/sweep.sql", q{SELECT set_config('appguard_lifecycle.sweep_id', appguard.appguard_sweep_begin('0', '1 hour')::text, false) IS NOT NULL AS begun;
SELECT count(public.snap(h, 443, jsonb_build_object('tls.leaf.subject.O',
		CASE WHEN random() < 0.25 THEN 'Org ' || (1 - right(o, 1)::int) ELSE o END)))
FROM (SELECT c.host AS h,
			 (SELECT s.facts #>> '{tls,leaf,subject,O}' FROM appguard.snapshots s
			  WHERE s.host = c.host ORDER BY s.id DESC LIMIT 1) AS o
	  FROM appguard.clients c ORDER BY random()) x;
INSERT INTO public.soak_sweeps (kind, result)
SELECT 'sweep', appguard.appguard_sweep_finish(current_setting('appguard_lifecycle.sweep_id')::bigint);
});
# drift found outside a sweep: applied at once
write_file("$dir/drift.sql", qq{\\set h random(1, $hosts)
INSERT INTO public.soak_sweeps (kind, result)
SELECT 'drift', jsonb_build_object('snapshot', public.snap('h' || :h || '.soak.test', 443,
	jsonb_build_object('tls.leaf.subject.O', 'Org ' || (1 - right(o, 1)::int))))
FROM (SELECT s.facts #>> '{tls,leaf,subject,O}' AS o FROM appguard.snapshots s
	  WHERE s.host = 'h' || :h || '.soak.test' ORDER BY s.id DESC LIMIT 1) x;
});
# re-approval of the suspended tokens, one at a time in random order
write_file("$dir/reapprove.sql", q{INSERT INTO public.soak_sweeps (kind, result)
SELECT 'reapprove', jsonb_build_object('reapproved',
	count(*) FILTER (WHERE (appguard.appguard_reapprove(token_id) ->> 'reapproved')::boolean))
FROM (SELECT token_id FROM appguard.refresh_tokens WHERE status = 'suspended' ORDER BY random()) x;
});

my @conn = ('-h', $node->host, '-p', $node->port, 'postgres');
my ($check_out, $check_err, $sweep_out, $sweep_err) = ('', '', '', '');
my $checks = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', $seconds, '-f', "$dir/check.sql", @conn ],
	'>', \$check_out, '2>', \$check_err);
my $sweeps = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '1', '-T', $seconds,
		'-f', "$dir/sweep.sql\@2", '-f', "$dir/drift.sql\@1", '-f', "$dir/reapprove.sql\@2", @conn
	],
	'>', \$sweep_out, '2>', \$sweep_err);
my $check_ok = $checks->finish;
my $sweep_ok = $sweeps->finish;
note "checks:\n$check_out$check_err";
note "sweeps:\n$sweep_out$sweep_err";

sub pgbench_figures
{
	my ($out) = @_;
	my ($done) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	return ($done // 0, $failed);
}
my ($check_tx, $check_failed) = pgbench_figures($check_out);
my ($sweep_tx, $sweep_failed) = pgbench_figures($sweep_out);
ok($check_ok, 'pgbench with the refresh checks exits 0');
ok($sweep_ok, 'pgbench with the sweeps and re-approvals exits 0');
is($check_failed, 0, 'no refresh check transaction failed');
is($sweep_failed, 0, 'no sweep, drift or re-approval transaction failed');
unlike($check_err . $sweep_err, qr/deadlock|ERROR/i, 'pgbench reports no error');
my $log = slurp_file($node->logfile);
my $deadlocks = () = $log =~ /deadlock detected/g;
is($deadlocks, 0, 'no "deadlock detected" in the server log');
my $errors = () = $log =~ /^.*\bERROR:.*$/mg;
is($errors, 0, 'no ERROR in the server log');

my %f = split /\|/, $node->safe_psql('postgres', q{
SELECT 'answers|' || count(*) || '|allowed|' || count(*) FILTER (WHERE allowed)
	|| '|refused_suspended|' || count(*) FILTER (WHERE NOT allowed AND answer #>> '{error,error_uri}' IS NOT NULL)
	|| '|wrong|' || count(*) FILTER (WHERE allowed AND status = 'suspended')
	|| '|wrong_other|' || count(*) FILTER (WHERE allowed AND status <> 'active')
	|| '|refusal_without_uri|' || count(*) FILTER (WHERE NOT allowed AND answer #>> '{error,error_uri}' IS NULL)
FROM public.soak_answers});
my %s = split /\|/, $node->safe_psql('postgres', q{
SELECT 'sweeps|' || count(*) FILTER (WHERE kind = 'sweep')
	|| '|drifts|' || count(*) FILTER (WHERE kind = 'drift')
	|| '|reapproved|' || coalesce(sum((result ->> 'reapproved')::int), 0)
	|| '|suspended_by_sweeps|' || coalesce(sum((result ->> 'tokens_suspended')::int), 0)
	|| '|suspensions|' || (SELECT count(*) FROM appguard.suspensions WHERE state = 'applied')
FROM public.soak_sweeps});
note join ', ', map { "$_ $f{$_}" } sort keys %f;
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
is($node->safe_psql('postgres', q{SELECT count(*) FROM appguard.sweeps WHERE state = 'running'}),
	0, 'no sweep left running');

my $elapsed = time - $t0;
note sprintf('soak: %d s, %d refresh checks (%d allowed, %d refused as suspended), '
	  . '%d sweep-client transactions (%d sweeps, %d drifts outside a sweep, %d tokens suspended by sweeps, '
	  . '%d re-approvals), %d deadlocks, %d wrong answers; test %.1f s',
	$seconds, $check_tx, $f{allowed}, $f{refused_suspended}, $sweep_tx, $s{sweeps}, $s{drifts},
	$s{suspended_by_sweeps}, $s{reapproved}, $deadlocks, $f{wrong}, $elapsed);
cmp_ok($elapsed, '<', 120, 'the soak stays bounded');

$node->stop;
done_testing();

sub write_file
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or die "cannot write $path: $!";
	print $fh $text;
	close $fh or die "cannot write $path: $!";
}
