# A partitioned token table managed by pg_partman, guarded as one table:
# time partitions by issue time, premade partitions, retention that drops
# old ones.  Consent across partitions, drift found by a sweep, the
# suspension fan-out writing rows in every partition, the refresh check,
# rotation lineage (subject and grant columns), re-approval; and pg_partman's
# maintenance run in the middle of a sweep (after the drift was measured,
# before its suspension is applied): the partition it creates is covered
# (a token rotated into it is suspended with its consent), the partition
# it drops takes its tokens' grants with it.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;
use AppGuard::LifecycleTest;

my $t0  = time;
my $env = AppGuard::TestEnv->new;

# ---------------------------------------------------------------- servers
my %id = (o => 'Example Health, Inc.', c => 'US', st => 'Wisconsin', l => 'Verona', policies => ['OV']);
$env->cert('app', %id, san => ['app.part.test']);
$env->certs('app-other' => { %id, o => 'Other Health Corp', san => ['app.part.test'], key_of => 'app' });
my $app   = $env->tls_host('app.part.test', cert => 'app');
my $stall = $env->fault_server('stall');
$env->zone('part.test', [ "app A $app", "slow A $stall", '@ TXT "appguard-client-id=part-app"' ]);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

my $lc   = AppGuard::LifecycleTest->new('partitioned', $env);
my $node = $lc->node;

# ---------------------------------------------------------------- the table, pg_partman, appguard
# Daily partitions by issue time, from 5 days ago, 2 premade; retention
# drops partitions older than 3 days.
$lc->sql(<<'SQL');
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE SCHEMA idp;
CREATE TABLE idp.tokens (
	token_id text NOT NULL,
	client_id text NOT NULL,
	subject text NOT NULL,
	grant_id text NOT NULL,
	status text NOT NULL DEFAULT 'active',
	error_uri text,
	issued_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (token_id, issued_at)
) PARTITION BY RANGE (issued_at);
SELECT partman.create_parent('idp.tokens', 'issued_at', 'native', 'daily', p_premake => 2,
	p_start_partition => (current_date - 5)::text);
UPDATE partman.part_config SET retention = '3 days', retention_keep_table = false
WHERE parent_table = 'idp.tokens';
SQL
sub leaves
{
	return $lc->sql(q{SELECT count(*) FROM pg_partition_tree('idp.tokens') WHERE isleaf});
}
my $leaves = leaves();
cmp_ok($leaves, '>=', 8, "pg_partman made $leaves partitions (5 days back, today, 2 premade, default)");

my $p = $lc->json(q{SELECT appguard_protect('idp.tokens', 'client_id', 'status', 'error_uri',
	subject_column => 'subject', grant_column => 'grant_id')});
is_deeply([ @$p{qw(table key_column rows subject_column grant_column)} ],
	[ 'idp.tokens', 'token_id', 0, 'subject', 'grant_id' ], 'appguard_protect takes the partitioned table');
is($lc->sql(q{SELECT count(*) FROM pg_partition_tree('idp.tokens') l
	WHERE l.isleaf AND (SELECT count(*) FROM pg_trigger t
		WHERE t.tgrelid = l.relid AND t.tgname LIKE 'appguard_protect_%' AND t.tgenabled <> 'D') = 5}),
	$leaves, "every partition has appguard's 4 row triggers (cloned) and its TRUNCATE trigger");

# ---------------------------------------------------------------- consent across partitions
$lc->register('part-app', 'Partition App', 'app.part.test');
my $s1 = $lc->snapshot(['app.part.test'])->{'app.part.test'};
is($s1->{tls}{leaf}{subject}{O}, 'Example Health, Inc.', 'baseline: O = Example Health, Inc.');
$lc->sql(<<'SQL');
INSERT INTO idp.tokens (token_id, client_id, subject, grant_id, issued_at) VALUES
	('old-1', 'part-app', 'alice', 'g-alice', now() - interval '4 days'),
	('bob-1', 'part-app', 'bob', 'g-bob', now()),
	('carol-1', 'part-app', 'carol', 'g-carol', now() + interval '1 day');
-- bob's token rotates: the host retires it and issues the next of the grant
UPDATE idp.tokens SET status = 'rotated' WHERE token_id = 'bob-1';
INSERT INTO idp.tokens (token_id, client_id, subject, grant_id) VALUES ('bob-2', 'part-app', 'bob', 'g-bob');
SQL
is($lc->sql(q{SELECT string_agg(token_key || ':' || state || ':' || (baseline_snapshot_id = } . $s1->{id}
	  . q{)::text, ' ' ORDER BY token_key) FROM appguard.grant_states WHERE token_table = 'idp.tokens'::regclass}),
	'bob-1:inactive:true bob-2:active:true carol-1:active:true old-1:active:true',
	'the grants name the partitioned table; each took the consent baseline; the rotated token is inactive');
is($lc->sql(q{SELECT count(DISTINCT tableoid) FROM idp.tokens}), '3', 'the tokens sit in 3 partitions');
is_deeply($lc->json(q{SELECT appguard_check_refresh('idp.tokens', 'bob-2')}), { allowed => JSON::PP::true },
	'refresh check of a token in a partition: allowed');

# ---------------------------------------------------------------- drift, and maintenance mid-sweep
$env->tls_host('app.part.test', addr => $app, cert => 'app-other');
$env->reload;
# a second app whose host stalls keeps the sweep running after the drift
# of the first was measured; suspensions are applied at the sweep's end
$lc->register('slow-app', 'Slow App', 'slow.part.test');
$lc->sql(<<'SQL');
CREATE FUNCTION wait_drift_measured() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 3000 LOOP
		IF EXISTS (SELECT FROM appguard.sweeps WHERE state = 'running' AND drifted >= 1) THEN
			RETURN true;
		END IF;
		PERFORM pg_sleep(0.01);
	END LOOP;
	RETURN false;
END
$$;
SQL
my $session = $node->background_psql('postgres', on_error_stop => 0);
$session->query_safe('SET appguard.timeout_ms = 8000');
$session->{stdin} .= "CALL appguard_sweep('0 s', '1 min');\n\\echo __done__\n\\warn __done__\n";
$session->{run}->pump_nb() while length $session->{stdin};
is($lc->sql('SELECT wait_drift_measured()'), 't', 'the sweep measured the drift and waits on the stalled host');

# pg_partman's maintenance, with 2 more partitions premade: it creates
# them, and drops the partitions past retention (old-1's among them)
$lc->sql(q{UPDATE partman.part_config SET premake = 4 WHERE parent_table = 'idp.tokens';
	SELECT partman.run_maintenance('idp.tokens')});
my $after = leaves();
is($lc->sql(q{SELECT count(*) FROM pg_partition_tree('idp.tokens') l
	WHERE l.isleaf AND (SELECT count(*) FROM pg_trigger t
		WHERE t.tgrelid = l.relid AND t.tgname LIKE 'appguard_protect_%' AND t.tgenabled <> 'D') = 5}),
	$after, "after maintenance: all $after partitions covered, the new ones included");
is($lc->sql(q{SELECT count(*) FROM idp.tokens WHERE token_id = 'old-1'}), '0', 'retention dropped old-1 with its partition');
is($lc->sql(q{SELECT count(*) FROM appguard.grant_states WHERE token_key = 'old-1'}), '0', "old-1's grant is gone too");
my ($ev) = $lc->rows(q{SELECT detail FROM appguard.events WHERE kind = 'partitions_changed'
	AND (detail->>'grants_forgotten')::int > 0 ORDER BY id DESC LIMIT 1});
is($ev->{detail}{grants_forgotten}, 1, 'partitions_changed event: 1 grant forgotten');
# carol's token rotates into a partition made just now
$lc->sql(q{UPDATE idp.tokens SET status = 'rotated' WHERE token_id = 'carol-1';
	INSERT INTO idp.tokens (token_id, client_id, subject, grant_id, issued_at)
	VALUES ('carol-2', 'part-app', 'carol', 'g-carol', now() + interval '3 days 1 hour')});
my $part = $lc->sql(q{SELECT tableoid::regclass FROM idp.tokens WHERE token_id = 'carol-2'});
like($part, qr/^idp\.tokens_p/, "carol-2 sits in a new partition, $part");

$session->{run}->pump() until $session->{stderr} =~ /__done__\r?\n/;
my ($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
is_deeply([ @$sweep{qw(state measured drifted suspended tokens_suspended)} ], [ 'finished', 2, 1, 1, 2 ],
	'the sweep: 2 hosts, 1 drifted, 1 suspension of 2 tokens (bob-2, carol-2)') or diag explain $sweep;
$session->quit;

my %row = map { $_->{token_id} => $_ } $lc->rows(q{SELECT token_id, status, error_uri FROM idp.tokens});
is(join(' ', map { "$_=$row{$_}{status}" } sort keys %row),
	'bob-1=rotated bob-2=suspended carol-1=rotated carol-2=suspended',
	'the fan-out wrote the active tokens in both partitions, the new one included');
my ($susp) = $lc->suspensions('part-app');
is($row{'carol-2'}{error_uri}, $susp->{error_uri}, "carol-2's error_uri is the suspension's");
my $refused = $lc->json(q{SELECT appguard_check_refresh('idp.tokens', 'carol-2')});
is($refused->{error}{error}, 'invalid_grant', 'refresh check of carol-2: invalid_grant');
is($refused->{error}{error_uri}, $susp->{error_uri}, '... with the error_uri');
is($lc->sql(q{SELECT appguard_drifted('part-app')}), 'f', 'appguard_drifted: no active grant drifts any more');

# ---------------------------------------------------------------- rotation lineage, re-approval
# a new token of bob's grant (a remembered approval) joins the suspension
$lc->sql(q{INSERT INTO idp.tokens (token_id, client_id, subject, grant_id) VALUES ('bob-3', 'part-app', 'bob', 'g-bob')});
is($lc->sql(q{SELECT status FROM idp.tokens WHERE token_id = 'bob-3'}), 'suspended',
	"a new token of bob's consent is issued suspended");
my $r = $lc->json(q{SELECT appguard_reapprove('idp.tokens', 'carol-2')});
my $latest_ok = $lc->sql(q{SELECT last_ok_snapshot_id FROM appguard.clients WHERE client_id = 'part-app'});
ok($r->{reapproved} && $r->{baseline_snapshot_id} == $latest_ok, 'carol re-approves: the latest snapshot is her baseline')
  or diag explain $r;
is($lc->sql(q{SELECT status || ' ' || (error_uri IS NULL) FROM idp.tokens WHERE token_id = 'carol-2'}), 'active true',
	'carol-2 active again in its partition, error_uri cleared');
is_deeply($lc->json(q{SELECT appguard_check_refresh('idp.tokens', 'carol-2')}), { allowed => JSON::PP::true },
	'refresh check of carol-2: allowed');
$lc->sql(q{SET appguard.timeout_ms = 500; CALL appguard_sweep('0 s', '1 min')});
($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
is_deeply([ @$sweep{qw(state drifted suspended)} ], [ 'finished', 0, 0 ], 'the next sweep: nothing drifts')
  or diag explain $sweep;
is($lc->sql(q{SELECT string_agg(token_id || '=' || status, ' ' ORDER BY token_id) FROM idp.tokens
	WHERE status <> 'rotated'}), 'bob-2=suspended bob-3=suspended carol-2=active',
	'bob stays suspended, carol active');

# ---------------------------------------------------------------- one partition truncated by hand
my $bob_part = $lc->sql(q{SELECT tableoid::regclass FROM idp.tokens WHERE token_id = 'bob-2'});
$lc->sql("TRUNCATE $bob_part");
is($lc->sql(q{SELECT string_agg(token_key, ' ' ORDER BY token_key) FROM appguard.grant_states
	WHERE token_table = 'idp.tokens'::regclass}), 'carol-1 carol-2',
	"TRUNCATE of today's partition forgot its tokens' grants, and only those");
is($lc->sql(q{SELECT count(*) FROM appguard.table_problems}), '0', 'no table problem');

note sprintf 'done in %.1f s', time - $t0;
done_testing();
