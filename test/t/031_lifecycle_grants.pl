# Grants against real servers: per-grant baselines (a grant consented
# before an identity change is suspended, one consented after it is not),
# re-approval takes a new baseline that the next sweep leaves alone, and an
# auth server's own token table in another schema with other column names
# (appguard_protect) behaves the same as appguard.refresh_tokens.  Then the
# mass-drift breaker: a sweep in which more than 20% of at least 10 hosts
# drift holds its suspensions (WARNING, NOTIFY appguard_hold) until an
# operator releases them; a sweep below the threshold applies at once.
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
$env->cert('app', %id, san => ['app.grants.test']);
$env->certs(
	'app-other' => { %id, o => 'Other Health Corp', san => ['app.grants.test'], key_of => 'app' },
	'fleet'     => { %id, san => ['*.fleet.test'], key_of => 'app' });
my $app = $env->tls_host('app.grants.test', cert => 'app');
$env->zone('grants.test', [ "app A $app", '@ TXT "appguard-client-id=grants-app"' ]);

# the fleet: 12 apps behind one address (SNI names), one zone
my @fleet = map { sprintf 'fleet%02d', $_ } 1 .. 12;
my $fleet_addr = $env->tls_host("$fleet[0].fleet.test", cert => 'fleet');
$env->tls_host("$_.fleet.test", cert => 'fleet', addr => $fleet_addr) for @fleet[ 1 .. $#fleet ];
sub fleet_zone
{
	my (@without) = @_;
	my %gone = map { $_ => 1 } @without;
	return [ (map { "$_ A $fleet_addr" } @fleet),
		map { qq{\@ TXT "appguard-client-id=$_"} } grep { !$gone{$_} } @fleet ];
}
$env->zone('fleet.test', fleet_zone());
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

my $lc = AppGuard::LifecycleTest->new('lifecycle_grants', $env);
my $port = $lc->port;
my $tbl = '"Auth Server"."OAuth Grants"';

# ---------------------------------------------------------------- an auth server's own table
$lc->sql(<<'SQL');
CREATE SCHEMA "Auth Server";
CREATE TABLE "Auth Server"."OAuth Grants" (
	"Grant Key" bigint PRIMARY KEY,
	"Client Ref" text NOT NULL,
	"Patient" text NOT NULL,
	"State" text NOT NULL DEFAULT 'enabled',
	"Why URL" text
);
SQL
my $p = $lc->json(qq{SELECT appguard_protect('$tbl', 'Client Ref', 'State', 'Why URL', 'enabled', 'held')});
is_deeply([ @$p{qw(table client_id_column status_column error_uri_column active_value suspended_value)} ],
	[ $tbl, 'Client Ref', 'State', 'Why URL', 'enabled', 'held' ], 'appguard_protect: the table and its columns');

# ---------------------------------------------------------------- consent before the change
$lc->register('grants-app', 'Grants App', 'app.grants.test');
my $s1 = $lc->snapshot(['app.grants.test'])->{'app.grants.test'};
is($s1->{tls}{leaf}{subject}{O}, 'Example Health, Inc.', 'baseline snapshot: O = Example Health, Inc.');
$lc->issue('grants-app', 't-old');
$lc->sql(qq{INSERT INTO $tbl VALUES (1, 'grants-app', 'patient-1')});
is($lc->token('t-old')->{baseline_snapshot_id}, $s1->{id}, 'old token: baseline = the snapshot before the change');
is($lc->sql(qq{SELECT baseline_snapshot_id FROM appguard.grant_states WHERE token_table = '$tbl'::regclass AND token_key = '1'}),
	$s1->{id}, 'old protected row: the same baseline');

# ---------------------------------------------------------------- the organization changes
$env->tls_host('app.grants.test', addr => $app, cert => 'app-other');
$env->reload;

# Consent after the change: with appguard.baseline_max_age 0 the consent
# takes a live snapshot; storing it evaluates the client, which suspends
# the old grants in the same transaction.
$lc->sql(<<"SQL");
SET appguard.baseline_max_age = 0;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('t-new', 'grants-app', 'patient-2');
INSERT INTO $tbl VALUES (2, 'grants-app', 'patient-2');
SQL
my $new = $lc->token('t-new');
my $s2 = $new->{baseline_snapshot_id};
ok($s2 > $s1->{id}, "new token: a new baseline (snapshot $s2) taken live at consent");
is($lc->sql("SELECT facts->'tls'->'leaf'->'subject'->>'O' FROM appguard.snapshots WHERE id = $s2"),
	'Other Health Corp', 'new baseline: O = Other Health Corp');
my $old = $lc->token('t-old');
is($old->{status}, 'suspended', 'old token: suspended');
is($new->{status}, 'active', 'new token: active');
my @susp = $lc->suspensions('grants-app');
is(scalar @susp, 1, 'one suspension (one drifted baseline)');
is_deeply($susp[0]{reasons}, ['tls_identity_changed'], 'reason tls_identity_changed');
is($susp[0]{baseline_snapshot_id}, $s1->{id}, 'the suspension is of the old baseline');
is($susp[0]{tokens_suspended}, 2, 'it suspended the old token and the old protected row');

# the protected table, with its own column names and values
my %row = map { $_->{'Grant Key'} => $_ } $lc->rows(qq{SELECT * FROM $tbl});
is($row{1}{State}, 'held', 'protected row 1 (old): "State" = held (the suspended value)');
is($row{1}{'Why URL'}, $old->{error_uri}, 'protected row 1: "Why URL" = the same error_uri as the token');
is($row{2}{State}, 'enabled', 'protected row 2 (new): still enabled');
ok(!defined $row{2}{'Why URL'}, 'protected row 2: no error_uri');
my $refused = $lc->check_refresh('t-old');
is_deeply($lc->json(qq{SELECT appguard_check_refresh('$tbl', '1')}), $refused,
	'check_refresh of protected row 1 = that of the old token (invalid_grant, same error_uri)');
is($refused->{error}{error}, 'invalid_grant', 'the old grants are refused with invalid_grant');
is_deeply($lc->check_refresh('t-new'), { allowed => JSON::PP::true }, 'new token: refresh allowed');
is_deeply($lc->json(qq{SELECT appguard_check_refresh('$tbl', '2')}), { allowed => JSON::PP::true },
	'protected row 2: refresh allowed');

# The auth server's role cannot move a token out of (or into) suspended
# itself, whatever it sets in its session: only re-approval reactivates.
$lc->sql('CREATE ROLE token_endpoint LOGIN IN ROLE appguard_auth_server');
for my $case ([ 't-old', 'active', 'refresh token was suspended by appguard' ],
	[ 't-new', 'suspended', 'only appguard suspends refresh tokens' ])
{
	my ($tok, $to, $msg) = @$case;
	my (undef, $err) = $lc->try(<<"SQL");
SET ROLE token_endpoint;
SET appguard_lifecycle.applying = on;
UPDATE appguard.refresh_tokens SET status = '$to' WHERE token_id = '$tok';
SQL
	like($err, qr/ERROR:  \Q$msg\E/, "the auth server's role cannot set $tok $to, even with appguard_lifecycle.applying on");
}
is($lc->sql(q{SELECT string_agg(token_id || '=' || status, ',' ORDER BY token_id) FROM appguard.refresh_tokens}),
	't-new=active,t-old=suspended', 'both tokens unchanged');

# ---------------------------------------------------------------- re-approval
my $r = $lc->json(q{SELECT appguard_reapprove('t-old')});
my $latest_ok = $lc->sql(q{SELECT last_ok_snapshot_id FROM appguard.clients WHERE client_id = 'grants-app'});
ok($r->{reapproved} && $r->{baseline_snapshot_id} == $latest_ok && $r->{suspension_id} == $susp[0]{id},
	'reapprove old token: reactivated with the latest snapshot as new baseline') or diag explain $r;
$r = $lc->json(qq{SELECT appguard_reapprove('$tbl', '1')});
ok($r->{reapproved} && $r->{baseline_snapshot_id} == $latest_ok, 'reapprove protected row 1: the same');
%row = map { $_->{'Grant Key'} => $_ } $lc->rows(qq{SELECT * FROM $tbl});
ok($row{1}{State} eq 'enabled' && !defined $row{1}{'Why URL'}, 'protected row 1: "State" enabled again, "Why URL" cleared');
is($lc->sql(q{SELECT count(*) FROM appguard.events WHERE kind = 'reapproved' AND client_id = 'grants-app'}), '2',
	'both re-approvals audited');

# the next sweep measures the same (changed) organization: nothing happens
my ($out, $err) = $lc->try(q{CALL appguard_sweep('0 s', '1 min')});
my ($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
is_deeply([ @$sweep{qw(state measured failed drifted suspended held)} ], [ 'finished', 1, 0, 0, 0, 0 ],
	'next sweep: measured the host, nothing drifted or suspended') or diag explain $sweep, $err;
is($lc->sql(q{SELECT string_agg(token_id || '=' || status, ',' ORDER BY token_id) FROM appguard.refresh_tokens}),
	't-new=active,t-old=active', 'after the sweep: both tokens active');
is($lc->sql(qq{SELECT string_agg("Grant Key" || '=' || "State", ',' ORDER BY "Grant Key") FROM $tbl}),
	'1=enabled,2=enabled', 'after the sweep: both protected rows enabled');
is($lc->sql(q{SELECT count(*) FROM appguard.suspensions}), '1', 'after the sweep: no new suspension');
is_deeply($lc->check_refresh('t-old'), { allowed => JSON::PP::true }, 're-approved token: refresh allowed');
is($lc->sql(q{SELECT appguard_drifted('grants-app')}), 'f', 'appguard_drifted: false');

# ---------------------------------------------------------------- the breaker
$lc->register($_, "Fleet app $_", "$_.fleet.test") for @fleet;
$lc->snapshot([ map { "$_.fleet.test" } @fleet ]);
$lc->issue($_, "$_-a", "$_-b") for @fleet;

# 4 of the 13 watched hosts lose their ownership record: 31% > 20%
my @drifting = @fleet[ 0 .. 3 ];
$env->zone_update('fleet.test', fleet_zone(@drifting));
($out, $err) = $lc->try(q{LISTEN appguard_hold; LISTEN appguard_suspension; CALL appguard_sweep('0 s', '1 min')});
($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
is_deeply([ @$sweep{qw(state measured drifted suspended held)} ], [ 'finished', 13, 4, 0, 4 ],
	'breaker: the sweep measured 13 hosts, 4 drifted, 4 suspensions held, none applied') or diag explain $sweep;
my $hold = $sweep->{hold_id};
ok($hold, "breaker: hold $hold opened");
like($err, qr/WARNING:  appguard: 4 suspension\(s\) found by sweep $sweep->{id} are held \(hold $hold\)/,
	'breaker: WARNING names the sweep and the hold');
like($err, qr/DETAIL:  4 of the 13 hosts measured drifted, more than the mass-drift threshold of 0\.2/,
	'breaker: WARNING detail gives the counts and the threshold');
like($out, qr/Asynchronous notification "appguard_hold" with payload "$hold" received/, 'breaker: NOTIFY appguard_hold with the hold id');
unlike($out, qr/"appguard_suspension"/, 'breaker: no NOTIFY appguard_suspension');
is($lc->sql(q{SELECT count(*) FROM appguard.refresh_tokens WHERE status = 'suspended'}), '0',
	'breaker: no token suspended');
is($lc->sql(qq{SELECT string_agg(client_id || ':' || array_to_string(reasons, ',') || ':' || active_grants, ' ' ORDER BY client_id)
               FROM appguard.held_suspensions WHERE hold_id = $hold}),
	join(' ', map { "$_:dns_ownership_lost:2" } @drifting), 'breaker: held_suspensions lists the 4 clients, their reason and grants');
is($lc->sql(q{SELECT appguard_drifted('fleet01')}), 't', 'held: appguard_drifted is true (active grants drift)');
is($lc->sql(q{SELECT count(*) FROM appguard_drift('fleet01') WHERE severity = 'suspend'}), '1',
	'held: appguard_drift gives the row behind it');
is($lc->sql(q{SELECT drift_state || '/' || held_suspensions FROM appguard.client_status WHERE client_id = 'fleet01'}),
	'drifting/1', 'held: client_status says drifting, 1 held');
is($lc->sql(qq{SELECT count(*) FROM appguard.events WHERE kind = 'hold_opened' AND hold_id = $hold}), '1',
	'held: hold_opened audited');

# the operator releases the hold: the suspensions are applied
my $rel = $lc->json(qq{SELECT appguard_release_hold($hold)});
is_deeply([ @$rel{qw(applied superseded tokens_suspended hold_state)} ], [ 4, 0, 8, 'released' ],
	'release: 4 suspensions applied, 8 tokens suspended, hold released') or diag explain $rel;
is($lc->sql(q{SELECT string_agg(DISTINCT client_id, ',' ORDER BY client_id) FROM appguard.refresh_tokens WHERE status = 'suspended'}),
	join(',', @drifting), 'release: the drifting clients\' tokens are suspended, no other');
is($lc->sql(q{SELECT count(*) FROM appguard.suspensions WHERE state = 'applied' AND hold_id IS NOT NULL}), '4',
	'release: the held suspensions are applied');
is($lc->check_refresh('fleet02-a')->{error}{error}, 'invalid_grant', 'release: refresh of a drifted token refused');
is_deeply($lc->check_refresh('fleet05-a'), { allowed => JSON::PP::true }, 'release: other fleet tokens allowed');

# below the threshold (1 of 13 drifts) the sweep applies at once
$env->zone_update('fleet.test', fleet_zone(@drifting, 'fleet05'));
($out, $err) = $lc->try(q{CALL appguard_sweep('0 s', '1 min')});
($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
is_deeply([ @$sweep{qw(state measured drifted suspended held tokens_suspended)} ], [ 'finished', 13, 1, 1, 0, 2 ],
	'below the threshold: 1 of 13 drifted, applied at the end of the sweep') or diag explain $sweep;
unlike($err, qr/WARNING/, 'below the threshold: no WARNING');
is($lc->sql(q{SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = 'fleet05'}),
	'suspended,suspended', 'below the threshold: fleet05 suspended');

note sprintf 'done in %.1f s', time - $t0;
done_testing();
