# Hosts of a client against real servers (knotd and nginx): every https
# redirect URI's host and the jwks_uri host are watched, each against its
# own baseline, and a suspension names the host that changed.
#   * three redirect hosts, one of which changes organization: suspended,
#     naming that host, in plain words on the error_uri page;
#   * a secondary redirect host that is an alias (CNAME) whose target is
#     deleted: dns_dangling_cname, naming it;
#   * a jwks_uri host whose certificate expires: tls_trust_lost, "where
#     the app's keys are published";
#   * re-registration that adds a host and removes one: recorded; the
#     added host's current facts are the baseline (no change), and the
#     removed host is no longer evaluated;
#   * a sweep plans every watched host and suspends nothing more.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;
use AppGuard::LifecycleTest;

*lit = \&AppGuard::LifecycleTest::lit;

my $t0  = time;
my $env = AppGuard::TestEnv->new;

# ---------------------------------------------------------------- hosts
my %id = (o => 'Example Health, Inc.', c => 'US', st => 'Wisconsin', l => 'Verona');
my @tls_hosts = qw(app.orgx.test login.orgx.test eu.orgx.test
  app.dang.test cb.dang.test app.jwk.test keys.jwk.test
  app.rereg.test old.rereg.test new.rereg.test);
my %after = (
	'login.orgx.test' => { %id, o => 'Northwind Data Brokers LLC', policies => ['OV'] },
	'keys.jwk.test'   => { %id, policies => ['OV'], not_before => -100, not_after => -10 },
	'old.rereg.test'  => { %id, o => 'Someone Else Ltd', policies => ['OV'] },
);
my %certs;
$certs{base} = { %id, policies => ['OV'] };
for my $h (@tls_hosts)
{
	$certs{$h} = { %id, policies => ['OV'], key_of => 'base', san => [$h] };
	$certs{"$h-after"} = { %{ $after{$h} }, key_of => 'base', san => [$h] } if $after{$h};
}
$env->certs(base => delete $certs{base});
$env->certs(%certs);
my %addr;
$addr{$_} = $env->tls_host($_, cert => $_) for @tls_hosts;

sub a_rec { my ($h) = @_; return ($h =~ /^([^.]+)/)[0] . " A $addr{$h}" }
my %zones = (
	'orgx.test' => [ map { a_rec($_) } qw(app.orgx.test login.orgx.test eu.orgx.test) ],
	'jwk.test'  => [ map { a_rec($_) } qw(app.jwk.test keys.jwk.test) ],
	'rereg.test' => [ map { a_rec($_) } qw(app.rereg.test old.rereg.test new.rereg.test) ],
	'dang.test' => [ a_rec('app.dang.test'), 'cb CNAME shop', "shop A $addr{'cb.dang.test'}" ],
);
my %client = ('orgx.test' => 'c-org', 'jwk.test' => 'c-jwks', 'rereg.test' => 'c-rereg',
	'dang.test' => 'c-dangle');
push @{ $zones{$_} }, qq{\@ TXT "appguard-client-id=$client{$_}"} for keys %zones;
$env->zone($_, $zones{$_}) for sort keys %zones;
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

my $lc = AppGuard::LifecycleTest->new('lifecycle_hosts', $env, conf => <<"CONF");
appguard.error_uri_template = 'https://auth.test/appguard/suspensions/{suspension_id}?client={client_id}'
CONF
my $port = $lc->port;
sub url { return "https://$_[0]:$port/" . ($_[1] // 'cb') }

# ---------------------------------------------------------------- registration
sub register_md
{
	my ($client, %md) = @_;
	my $json = JSON::PP->new->canonical->encode({ client_name => "App $client", %md });
	return $lc->json('SELECT appguard_register_client(' . lit($client) . ', ' . lit($json) . ')');
}
my $org = register_md('c-org', redirect_uris =>
	  [ url('app.orgx.test'), url('login.orgx.test'), url('eu.orgx.test'), url('app.orgx.test', 'again') ]);
is_deeply([ map { "$_->{host}:" . join('+', @{ $_->{roles} }) } @{ $org->{hosts} } ],
	[ 'app.orgx.test:primary_redirect+redirect', 'eu.orgx.test:redirect', 'login.orgx.test:redirect' ],
	'c-org: three redirect hosts watched, the primary first, duplicates merged');
register_md('c-dangle', redirect_uris => [ url('app.dang.test'), url('cb.dang.test') ]);
my $jw = register_md('c-jwks', redirect_uris => [ url('app.jwk.test') ], jwks_uri => url('keys.jwk.test', 'jwks.json'));
is_deeply([ map { "$_->{host}:" . join('+', @{ $_->{roles} }) } @{ $jw->{hosts} } ],
	[ 'app.jwk.test:primary_redirect', 'keys.jwk.test:jwks_uri' ], 'c-jwks: the jwks_uri host is watched');
register_md('c-rereg', redirect_uris => [ url('app.rereg.test'), url('old.rereg.test') ]);

# ---------------------------------------------------------------- baseline
my $facts = $lc->snapshot([@tls_hosts]);
for my $h (@tls_hosts)
{
	ok($facts->{$h}{status} eq 'ok' && $facts->{$h}{tls}{verified}, "baseline of $h: ok and verified")
	  or diag explain $facts->{$h};
}
$lc->issue($_, "$_-t1", "$_-t2") for qw(c-org c-dangle c-jwks c-rereg);
is($lc->sql(q{SELECT count(*) FROM appguard.grant_states WHERE baseline_snapshot_id IS NULL}), '0',
	'every token has a baseline');

# ---------------------------------------------------------------- re-registration
my $ev = $lc->sql('SELECT max(id) FROM appguard.events');
my $re = $lc->json(q{SELECT appguard_reregister_client('c-rereg', } . lit(JSON::PP->new->canonical->encode({
				redirect_uris => [ url('app.rereg.test'), url('new.rereg.test') ] })) . ')');
is_deeply([ map { $_->{host} } @{ $re->{hosts} } ], [ 'app.rereg.test', 'new.rereg.test' ],
	're-registration: the new host list');
is($lc->sql("SELECT string_agg(kind || ':' || coalesce(detail->>'host', ''), ',' ORDER BY id) FROM appguard.events WHERE id > $ev"),
	'client_updated:,host_removed:old.rereg.test,host_added:new.rereg.test,host_baselines_taken:new.rereg.test',
	're-registration: hosts removed and added are recorded, and the added host\'s facts taken into the baselines');
is($lc->sql(q{SELECT string_agg(DISTINCT how, ',') FROM appguard.baseline_hosts
              WHERE client_id = 'c-rereg' AND host = 'new.rereg.test'}),
	'host_added', 're-registration: the added host has a baseline in every consent');
is($lc->sql(q{SELECT count(*) FROM appguard.baseline_hosts WHERE client_id = 'c-rereg' AND host = 'old.rereg.test'}),
	'0', 're-registration: the removed host\'s baselines are gone');
is($lc->sql(q{SELECT count(*) FROM appguard.grant_states WHERE client_id = 'c-rereg' AND baseline_snapshot_id IS NULL}),
	'0', 're-registration: no grant is left without a baseline');

# ---------------------------------------------------------------- the changes
$env->tls_host($_, addr => $addr{$_}, cert => "$_-after") for sort keys %after;
$env->reload;
$env->zone_update('dang.test', [ a_rec('app.dang.test'), 'cb CNAME shop',
		'@ TXT "appguard-client-id=c-dangle"' ]);

$facts = $lc->snapshot([@tls_hosts], listen => ['appguard_suspension']);
my @notified = map { /payload "(\d+)"/ ? $1 : () } $lc->notifications;
is($facts->{'login.orgx.test'}{tls}{leaf}{subject}{O}, 'Northwind Data Brokers LLC',
	'nginx serves the new organization on login.orgx.test');

my %expect = (
	'c-org' => { host => 'login.orgx.test', roles => ['redirect'], reasons => ['tls_identity_changed'],
		what => 'the address your login is sent to' },
	'c-dangle' => { host => 'cb.dang.test', roles => ['redirect'], reasons => ['dns_dangling_cname'],
		what => 'the address your login is sent to' },
	'c-jwks' => { host => 'keys.jwk.test', roles => ['jwks_uri'], reasons => ['tls_trust_lost'],
		what => "where the app's keys are published" },
);
for my $client (sort keys %expect)
{
	my $e = $expect{$client};
	my $what = "$client ($e->{host})";
	my @susp = $lc->suspensions($client);
	is(scalar @susp, 1, "$what: one suspension") or next;
	my $su = $susp[0];
	is_deeply([ $su->{host}, $su->{port}, $su->{roles}, $su->{reasons}, $su->{state}, $su->{tokens_suspended} ],
		[ $e->{host}, $port, $e->{roles}, $e->{reasons}, 'applied', 2 ],
		"$what: the suspension names the host, its port and roles, the reason; both tokens suspended")
	  or diag explain $su;
	is($lc->sql("SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = " . lit($client)),
		'suspended,suspended', "$what: tokens suspended");
	my $uri = "https://auth.test/appguard/suspensions/$su->{id}?client=$client";
	is($lc->check_refresh("$client-t1")->{error}{error_uri}, $uri, "$what: the refresh is refused with the error_uri");
	ok((grep { $_ == $su->{id} } @notified), "$what: NOTIFY appguard_suspension");
	my $ex = $lc->json("SELECT appguard_explain($su->{id})");
	is_deeply($ex->{address}, { host => $e->{host}, port => $port + 0, roles => $e->{roles},
			primary => JSON::PP::false, what => $e->{what} },
		"$what: explained: which address, in plain words") or diag explain $ex->{address};
	like($ex->{summary}, qr/changed at \Q$e->{host}\E, \Q$e->{what}\E, after you approved it/,
		"$what: the patient's summary names the address");
	like($lc->sql("SELECT appguard_explain_html($su->{id}, " . lit($client) . ')'),
		qr{<p>The address that changed: <strong>\Q$e->{host}\E</strong>, }, "$what: the page names the address");
}
is($lc->json(q{SELECT appguard_explain(id) FROM appguard.suspensions WHERE client_id = 'c-org'})->{changes}[0]{new},
	'Northwind Data Brokers LLC', 'c-org: the change is the organization, old -> new');

# the primary hosts, the unchanged secondaries and the re-registered client
is(scalar $lc->suspensions('c-rereg'), 0, 'c-rereg: the removed host changed, the added one is as taken: no suspension');
is($lc->sql(q{SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = 'c-rereg'}),
	'active,active', 'c-rereg: tokens active');
is($lc->sql(q{SELECT count(*) FROM appguard.suspensions}), '3', 'three suspensions in all');
is($lc->sql(q{SELECT count(*) FROM appguard.drifts WHERE snapshot_id IN
              (SELECT id FROM appguard.snapshots WHERE host IN ('old.rereg.test', 'eu.orgx.test', 'app.orgx.test'))}),
	'0', 'no drift recorded for a removed host or an unchanged one');

# ---------------------------------------------------------------- a sweep
my ($out, $err) = $lc->try(q{CALL appguard_sweep('0 s', '2 min')});
my ($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
is_deeply([ @$sweep{qw(state planned suspended held)} ], [ 'finished', scalar(@tls_hosts) - 1, 0, 0 ],
	'a sweep plans every watched host (not the removed one) and suspends nothing more')
  or diag explain $sweep, $err;
is($lc->sql(q{SELECT count(*) FROM appguard.suspensions}), '3', 'no new suspension after the sweep');

note sprintf 'done in %.1f s', time - $t0;
done_testing();
