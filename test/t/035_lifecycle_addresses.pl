# Every address of a host against real servers (knotd and nginx): a probe
# measures each address DNS gave (up to appguard.max_addresses_per_family
# per family), and an address that serves a certificate not trusted for
# the name, or another organization's, suspends (tls_address_mismatch).
#   * two A records, the second of which starts serving another
#     organization's certificate: suspended, naming that address;
#   * two A records, the second of which starts serving an untrusted
#     (self-signed) certificate: suspended;
#   * addresses that come and go (a new one with a renewed certificate of
#     the same organization, the first one removed): no suspension;
#   * the cap: addresses beyond it are counted, not measured (a bad
#     certificate there goes unseen, as documented);
#   * blocked addresses (loopback, appguard.allow_private_addresses off):
#     facts of the list; with none allowed the probe is blocked, which is
#     no change either; with appguard.allowed_networks opening one address,
#     that one is measured and the others are blocked facts;
#   * an address that accepts no connection (nothing listens) is a fact of
#     the list, not a failure of the probe, and no change.
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
my @names = qw(app.org2.test app.cert2.test app.move.test app.cap.test);
my %certs = (base => { %id, policies => ['OV'] });
$env->certs(base => delete $certs{base});
for my $h (@names)
{
	$certs{$h} = { %id, policies => ['OV'], key_of => 'base', san => [$h] };
}
$certs{'app.org2.test-other'} = { %id, o => 'Northwind Data Brokers LLC', policies => ['OV'], san => ['app.org2.test'] };
$certs{'app.cert2.test-self'} = { %id, policies => ['OV'], issuer => 'self', san => ['app.cert2.test'] };
$certs{'app.move.test-renewed'} = { %id, o => 'EXAMPLE HEALTH LLC', policies => ['EV'], san => ['app.move.test'] };
$certs{'app.cap.test-self'} = { %id, policies => ['OV'], issuer => 'self', san => ['app.cap.test'] };
# app.exp2.test: the second address serves a certificate expiring in 5 days
$certs{'app.exp2.test'} = { %id, policies => ['OV'], key_of => 'base', san => ['app.exp2.test'] };
$certs{'app.exp2.test-soon'} = { %id, policies => ['OV'], not_after => 5, san => ['app.exp2.test'] };
$env->certs(%certs);

# two addresses each; app.cap.test three, the last with an untrusted cert;
# one address where nothing listens
my %addr;
for my $h (@names)
{
	$addr{$h} = [ map { $env->tls_host($h, cert => $h) } 1 .. 2 ];
}
push @{ $addr{'app.cap.test'} }, $env->tls_host('app.cap.test', cert => 'app.cap.test-self');
$addr{'app.move.test'}[2] = $env->tls_host('app.move.test', cert => 'app.move.test-renewed');
my $silent = $env->net . '.250.1';	# a loopback address nothing listens on
$addr{'app.exp2.test'} = [ $env->tls_host('app.exp2.test', cert => 'app.exp2.test'),
	$env->tls_host('app.exp2.test', cert => 'app.exp2.test-soon') ];

sub a_recs { my ($label, @a) = @_; return map { "$label A $_" } @a }
my %zones = (
	'org2.test'  => [ a_recs('app', @{ $addr{'app.org2.test'} }) ],
	'cert2.test' => [ a_recs('app', @{ $addr{'app.cert2.test'} }) ],
	'move.test'  => [ a_recs('app', $addr{'app.move.test'}[0]) ],
	'cap.test'   => [ a_recs('app', @{ $addr{'app.cap.test'} }) ],
	'exp2.test'  => [ a_recs('app', @{ $addr{'app.exp2.test'} }) ],
);
my %client = ('org2.test' => 'c-org2', 'cert2.test' => 'c-cert2', 'move.test' => 'c-move');
push @{ $zones{$_} }, qq{\@ TXT "appguard-client-id=$client{$_}"} for keys %client;
$env->zone($_, $zones{$_}) for sort keys %zones;
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

my $lc = AppGuard::LifecycleTest->new('lifecycle_addresses', $env, conf => <<"CONF");
appguard.error_uri_template = 'https://auth.test/appguard/suspensions/{suspension_id}?client={client_id}'
CONF
my $port = $lc->port;
$lc->register($client{$_}, "App $client{$_}", "app.$_") for sort keys %client;

sub listed { my ($f) = @_; return [ map { "$_->{address}:$_->{status}" } @{ $f->{tls_addresses} // [] } ] }

# ---------------------------------------------------------------- baseline
my $facts = $lc->snapshot([ map { "app.$_" } sort keys %client ]);
for my $h (map { "app.$_" } sort keys %client)
{
	ok($facts->{$h}{status} eq 'ok' && $facts->{$h}{tls}{verified}, "baseline of $h: ok and verified")
	  or diag explain $facts->{$h};
}
my $f2 = $facts->{'app.org2.test'};
is_deeply(listed($f2), [ map { "$_:ok" } @{ $addr{'app.org2.test'} } ],
	'app.org2.test: both addresses measured, in order') or diag explain $f2;
is($f2->{tls}{address}, $addr{'app.org2.test'}[0], 'the tls keys describe the first address');
is_deeply([ map { $_->{leaf_sha256} } @{ $f2->{tls_addresses} } ],
	[ ($f2->{tls}{leaf}{sha256}) x 2 ], 'each address: the leaf digest (the same certificate on both)');
is_deeply([ @{ $f2->{tls_addresses}[1] }{qw(verified subject_o validation)} ],
	[ JSON::PP::true, 'Example Health, Inc.', 'OV' ], 'the second address: verified, subject O, class');
is($f2->{tls_addresses_skipped}, 0, 'nothing skipped under the cap');
$lc->issue($_, "$_-t1", "$_-t2") for values %client;

# ---------------------------------------------------------------- the changes
# the second address of app.org2.test serves another organization's
# certificate; the second of app.cert2.test a self-signed one; app.move.test
# gains a third address with a renewed certificate of the same organization
$env->tls_host('app.org2.test', addr => $addr{'app.org2.test'}[1], cert => 'app.org2.test-other');
$env->tls_host('app.cert2.test', addr => $addr{'app.cert2.test'}[1], cert => 'app.cert2.test-self');
$env->reload;
$env->zone_update('move.test', [ a_recs('app', @{ $addr{'app.move.test'} }[0, 2]),
		'@ TXT "appguard-client-id=c-move"' ]);

$facts = $lc->snapshot([ map { "app.$_" } sort keys %client ], listen => ['appguard_suspension']);
is($facts->{'app.org2.test'}{tls_addresses}[1]{subject_o}, 'Northwind Data Brokers LLC',
	'nginx serves the other organization on the second address');
is($facts->{'app.org2.test'}{tls}{leaf}{subject}{O}, 'Example Health, Inc.',
	'... while the first address (the tls keys) is unchanged');
is_deeply(listed($facts->{'app.move.test'}), [ map { "$_:ok" } @{ $addr{'app.move.test'} }[0, 2] ],
	'app.move.test: the new address is measured');

my %expect = (
	'c-org2' => { address => $addr{'app.org2.test'}[1], field => "tls_addresses[$addr{'app.org2.test'}[1]].subject_o",
		old => 'Example Health, Inc.', new => 'Northwind Data Brokers LLC',
		text => qr/organization in the certificate at the app's server address \Q$addr{'app.org2.test'}[1]\E\): Example Health, Inc\. → Northwind Data Brokers LLC/ },
	'c-cert2' => { address => $addr{'app.cert2.test'}[1], field => "tls_addresses[$addr{'app.cert2.test'}[1]].verify_error",
		old => undef, new => 'self-signed certificate',
		text => qr/certificate trust at the app's server address \Q$addr{'app.cert2.test'}[1]\E\): trusted → self-signed certificate/ },
);
for my $client (sort keys %expect)
{
	my $e = $expect{$client};
	my @susp = $lc->suspensions($client);
	is(scalar @susp, 1, "$client: one suspension") or next;
	my $su = $susp[0];
	is_deeply([ $su->{reasons}, $su->{state}, $su->{tokens_suspended} ],
		[ ['tls_address_mismatch'], 'applied', 2 ], "$client: tls_address_mismatch, both tokens suspended")
	  or diag explain $su;
	my $ex = $lc->json("SELECT appguard_explain($su->{id})");
	my ($change) = grep { $_->{reason} eq 'tls_address_mismatch' } @{ $ex->{changes} };
	is_deeply([ @$change{qw(field old new severity)} ], [ $e->{field}, $e->{old}, $e->{new}, 'suspend' ],
		"$client: the change names the address, old -> new") or diag explain $ex->{changes};
	like($ex->{summary}, $e->{text}, "$client: the patient's summary says which address and what it serves");
	note "$client: $ex->{summary}";
	like($lc->sql("SELECT appguard_explain_html($su->{id}, " . lit($client) . ')'),
		qr{One of the app&#39;s server addresses presents a certificate that is not the app&#39;s</p><p>\w[^<]* at the app&#39;s server address \Q$e->{address}\E:},
		"$client: the page says it in plain words, naming the address");
}
is(scalar $lc->suspensions('c-move'), 0, 'c-move: an address that came, with a renewed certificate: no suspension');

# the first address of app.move.test goes: the renewed one is now the
# first (its EV class and "EXAMPLE HEALTH LLC" are no change either)
$env->zone_update('move.test', [ a_recs('app', $addr{'app.move.test'}[2]),
		'@ TXT "appguard-client-id=c-move"' ]);
$facts = $lc->snapshot(['app.move.test']);
is($facts->{'app.move.test'}{tls}{address}, $addr{'app.move.test'}[2], 'app.move.test: one address left, measured');
is(scalar $lc->suspensions('c-move'), 0, 'c-move: an address that went: no suspension');
is($lc->sql(q{SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = 'c-move'}),
	'active,active', 'c-move: tokens active');
is($lc->sql(q{SELECT count(*) FROM appguard.drifts d JOIN appguard.snapshots s ON s.id = d.snapshot_id
              WHERE s.host = 'app.move.test' AND d.severity = 'suspend'}),
	'0', 'c-move: no suspend-level drift recorded');

# ---------------------------------------------------------------- the cap
$facts = $lc->snapshot(['app.cap.test'], set => { 'appguard.max_addresses_per_family' => 2 });
my $fc = $facts->{'app.cap.test'};
is_deeply([ listed($fc), $fc->{tls_addresses_skipped} ],
	[ [ map { "$_:ok" } @{ $addr{'app.cap.test'} }[0, 1] ], 1 ],
	'cap 2: two addresses measured, the third counted') or diag explain $fc;
$facts = $lc->snapshot(['app.cap.test']);
$fc = $facts->{'app.cap.test'};
is_deeply([ listed($fc), $fc->{tls_addresses_skipped}, $fc->{tls_addresses}[2]{verified} ],
	[ [ map { "$_:ok" } @{ $addr{'app.cap.test'} } ], 0, JSON::PP::false ],
	'default cap: all three measured, the third untrusted') or diag explain $fc;
is($fc->{status}, 'ok', '... which is a fact, not a failure of the probe');

# ---------------------------------------------------------------- blocked
$facts = $lc->snapshot(['app.cap.test'],
	set => { 'appguard.allow_private_addresses' => 'off', 'appguard.max_addresses_per_family' => 2 });
$fc = $facts->{'app.cap.test'};
is_deeply([ $fc->{status}, [ map { "$_->{address}:$_->{status}:$_->{blocked}" } @{ $fc->{tls_addresses} } ],
		$fc->{tls_addresses_skipped}, $fc->{tls} ],
	[ 'blocked', [ map { "$_:blocked:loopback" } @{ $addr{'app.cap.test'} }[0, 1] ], 1, undef ],
	'allow_private_addresses off: each loopback address is a blocked fact; none allowed: the probe is blocked')
  or diag explain $fc;
like($fc->{error}, qr/refused by the address policy: \Q$addr{'app.cap.test'}[0]\E is a loopback address \(appguard.allow_private_addresses is off, and appguard.allowed_networks does not list it\)/,
	'... with the error of a blocked probe, as before');
my $n = $lc->sql('SELECT count(*) FROM appguard.suspensions');
$facts = $lc->snapshot(['app.org2.test', 'app.cert2.test'], set => { 'appguard.allow_private_addresses' => 'off' });
is($lc->sql('SELECT count(*) FROM appguard.suspensions'), $n, 'a blocked probe of a watched host changes nothing');

# ---------------------------------------------------------------- allowed and blocked
# appguard.allowed_networks opens one address alone, with
# allow_private_addresses off: that one is measured (the tls keys), the
# others of the host are blocked facts, and the probe is ok
my $only = $addr{'app.cap.test'}[1];
$facts = $lc->snapshot(['app.cap.test'], set => { 'appguard.allow_private_addresses' => 'off',
		'appguard.allowed_networks' => "$only/32" });
$fc = $facts->{'app.cap.test'};
is_deeply([ $fc->{status}, $fc->{tls}{address},
		[ map { join ':', $_->{address}, $_->{status}, $_->{blocked} // '-' } @{ $fc->{tls_addresses} } ] ],
	[ 'ok', $only, [ map { $_ eq $only ? "$_:ok:-" : "$_:blocked:loopback" } @{ $addr{'app.cap.test'} } ] ],
	'allowed_networks lists one address: it alone is measured, the others are blocked facts, the probe ok')
  or diag explain $fc;
# a watched host whose other address served another organization: with
# that address blocked the snapshot is ok, and a blocked address is no
# change (nothing new is suspended)
$n = $lc->sql('SELECT count(*) FROM appguard.suspensions');
$facts = $lc->snapshot(['app.org2.test'], set => { 'appguard.allow_private_addresses' => 'off',
		'appguard.allowed_networks' => "$addr{'app.org2.test'}[0]/32" });
is_deeply([ $facts->{'app.org2.test'}{status}, listed($facts->{'app.org2.test'}) ],
	[ 'ok', [ "$addr{'app.org2.test'}[0]:ok", "$addr{'app.org2.test'}[1]:blocked" ] ],
	'app.org2.test: the first address measured, the second blocked') or diag explain $facts->{'app.org2.test'};
is($lc->sql('SELECT count(*) FROM appguard.suspensions'), $n, '... and a blocked address changes nothing');

# ---------------------------------------------------------------- a dead address
# an address nothing listens on, after the first: refused, a fact
$env->zone_update('move.test', [ a_recs('app', $addr{'app.move.test'}[2], $silent),
		'@ TXT "appguard-client-id=c-move"' ]);
$facts = $lc->snapshot(['app.move.test']);
my $fm = $facts->{'app.move.test'};
my ($dead) = grep { $_->{address} eq $silent } @{ $fm->{tls_addresses} };
ok($fm->{status} eq 'ok' && $dead && $dead->{status} =~ /^(connect_failed|tls_failed)$/,
	'an address that refuses the connection: a fact of the list, the probe ok') or diag explain $fm;
is(scalar $lc->suspensions('c-move'), 0, '... and no change');

# ---------------------------------------------------------------- expiry at each address
# each measured address gives its leaf's not_after; a certificate expiring
# soon at the second address is listed by appguard_expiring_certificates
# with that address, though the first address (the tls keys) has 90 days
$lc->register('c-exp2', 'App c-exp2', 'app.exp2.test');
my $fx = $lc->snapshot(['app.exp2.test'])->{'app.exp2.test'};
is_deeply([ $fx->{status}, listed($fx) ], [ 'ok', [ map { "$_:ok" } @{ $addr{'app.exp2.test'} } ] ],
	'app.exp2.test: both addresses measured') or diag explain $fx;
is($fx->{tls_addresses}[0]{not_after}, $fx->{tls}{leaf}{not_after},
	'the first address: the not_after of the tls keys');
ok($fx->{tls_addresses}[1]{not_after} && $fx->{tls_addresses}[1]{not_after} lt $fx->{tls}{leaf}{not_after},
	'the second address: its own, sooner not_after') or diag explain $fx->{tls_addresses};
is($lc->sql(q{SELECT string_agg(host || ' ' || address || ' ' || days_left || ' ' || verified, ', ')
			  FROM appguard_expiring_certificates(30) WHERE client_id = 'c-exp2'}),
	"app.exp2.test $addr{'app.exp2.test'}[1] 4 true",
	'appguard_expiring_certificates: the second address, 4 days left, verified');
is($lc->sql(q{SELECT count(*) FROM appguard_expiring_certificates(3) WHERE client_id = 'c-exp2'}), 0,
	'... and nothing within 3 days');

note sprintf 'done in %.1f s', time - $t0;
done_testing();
