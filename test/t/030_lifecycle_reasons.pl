# The drift lifecycle against real servers: each reason the default policy
# suspends for fires, with its reason code and field-level diff, when the
# real TLS server (nginx) or the real DNS server (knotd) changes what it
# serves; each warn reason is recorded and suspends nothing; a renewal
# with the same identity and a resolver outage suspend nothing; a host
# that stays unreachable is suspended only past appguard.unreachable_grace.
#
# One client per scenario, each on its own host.  Every host is measured
# at baseline, the tokens are issued, every change is made at once (one
# nginx reload, zone updates), and every host is measured again.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AppGuard::TestEnv;
use AppGuard::LifecycleTest;

*lit = \&AppGuard::LifecycleTest::lit;

my $t0  = time;
my $env = AppGuard::TestEnv->new;

# ---------------------------------------------------------------- scenarios
# host => { client, zone, cert options at baseline and after, expected }
my %id = (o => 'Example Health, Inc.', c => 'US', st => 'Wisconsin', l => 'Verona');
my @suspend = (
	{
		host => 'expired.tls.test', client => 'c-expired',
		after => { %id, policies => ['OV'], not_before => -100, not_after => -10 },
		reason => 'tls_trust_lost', field => 'tls.verify_error',
		old => undef, new => qr/^certificate has expired$/,
	},
	{
		host => 'selfsigned.tls.test', client => 'c-selfsigned',
		after => { %id, policies => ['OV'], issuer => 'self' },
		reason => 'tls_trust_lost', field => 'tls.verify_error',
		old => undef, new => qr/^self[- ]signed certificate$/,
	},
	{
		host => 'class.tls.test', client => 'c-class',
		after => { %id, policies => ['DV'] },
		reason => 'tls_class_downgraded', field => 'tls.leaf.validation',
		old => 'OV', new => qr/^DV$/,
	},
	{
		# a client id that needs URL-encoding in the error_uri
		host => 'identity.tls.test', client => 'identity app/1',
		after => { %id, o => 'Other Health Corp', policies => ['OV'] },
		reason => 'tls_identity_changed', field => 'tls.leaf.subject.O',
		old => 'Example Health, Inc.', new => qr/^Other Health Corp$/,
	},
	{
		host => 'app.owner.test', client => 'c-owner',
		reason => 'dns_ownership_lost', field => 'dns.ownership_ids',
		old => 'c-owner', new => undef,
	},
	{
		host => 'app.gone.test', client => 'c-gone',
		reason => 'dns_domain_gone', field => 'dns.rcode',
		old => 'NOERROR', new => qr/^NXDOMAIN$/, status => 'dns_failed',
	},
);
my @warn = (
	{
		# a CA with another organization that is trusted as well (see
		# the trust bundle below)
		host => 'issuer.tls.test', client => 'c-issuer',
		after => { %id, policies => ['OV'], issuer => 'untrusted' },
		reason => 'tls_issuer_org_changed', field => 'tls.leaf.issuer.O',
		old => 'AppGuard Test CA', new => 'Untrusted Test CA',
	},
	{
		host => 'old.tls.test', client => 'c-tlsversion',
		protocols_after => 'TLSv1.1',
		reason => 'tls_version_weak', field => 'tls.version',
		old => qr/^TLSv1\.[23]$/, new => 'TLSv1.1',
	},
	{
		host => 'app.ns.test', client => 'c-ns',
		reason => 'dns_ns_changed', field => 'dns.ns',
		old => '["ns.agenv.test"]', new => '["ns1.elsewhere.test","ns2.elsewhere.test"]',
	},
	{
		host => 'app.cname.test', client => 'c-cname',
		reason => 'dns_cname_changed', field => 'dns.cname',
		old => '["blue.cname.test"]', new => '["green.cname.test"]',
	},
	{
		host => 'app.caa.test', client => 'c-caa',
		reason => 'dns_caa_changed', field => 'dns.caa',
		old => '["0 issue ca.test"]', new => '["0 issue other-ca.test"]',
	},
);
# renewal: same identity, new key, serial, intermediate and dates
my $renewal = { host => 'renewal.tls.test', client => 'c-renewal' };
# unreachable: the A record moves to an address where nothing listens
my @unreachable = (
	{ host => 'grace.down.test', client => 'c-grace' },
	{ host => 'off.down.test',   client => 'c-off' },
	{ host => 'warn.down.test',  client => 'c-warn' },
);
my @all = (@suspend, @warn, $renewal, @unreachable);

# ---------------------------------------------------------------- certificates
# One RSA key for every leaf but the renewal's (keys are the slow part)
my %certs = (base => { %id, policies => ['OV'] }, 'renewal-new' => {
		%id, policies => ['OV'], san => ['renewal.tls.test'],
		issuer => 'intermediate2', not_before => -2, not_after => 200 });
for my $s (@all)
{
	$certs{ $s->{host} } = { %id, policies => ['OV'], key_of => 'base', san => [ $s->{host} ] };
	$certs{"$s->{host}-after"} = { %{ $s->{after} }, key_of => 'base', san => [ $s->{host} ] }
	  if $s->{after};
}
$env->certs(base => delete $certs{base});
$env->certs(%certs);

my %addr;
$addr{ $_->{host} } = $env->tls_host($_->{host}, cert => $_->{host}) for @all;

# DNS: the TLS scenarios share tls.test, each DNS scenario has its zone
# (before and after the change); every client has its ownership record.
my $nowhere = $env->fault_server('refuse');
my %zones;
sub a_record
{
	my ($host, $to) = @_;
	return ($host =~ /^([^.]+)/)[0] . ' A ' . ($to // $addr{$host});
}
for my $s (grep { $_->{host} =~ /\.tls\.test$/ } @all)
{
	push @{ $zones{'tls.test'}{before} }, a_record($s->{host});
	push @{ $zones{'tls.test'}{after} },  a_record($s->{host});
}
$zones{'owner.test'} = {
	before => [ a_record('app.owner.test'), '@ TXT "v=spf1 -all"' ],
	after  => [ a_record('app.owner.test'), '@ TXT "v=spf1 -all"' ] };
$zones{'gone.test'} = { before => [ a_record('app.gone.test') ], after => [] };
$zones{'ns.test'} = {
	before => [ a_record('app.ns.test') ],
	after  => [ a_record('app.ns.test'), '@ NS ns1.elsewhere.test.', '@ NS ns2.elsewhere.test.' ] };
my @colours = ("blue A $addr{'app.cname.test'}", "green A $addr{'app.cname.test'}");
$zones{'cname.test'} = { before => [ 'app CNAME blue', @colours ], after => [ 'app CNAME green', @colours ] };
$zones{'caa.test'} = {
	before => [ a_record('app.caa.test'), '@ CAA 0 issue "ca.test"' ],
	after  => [ a_record('app.caa.test'), '@ CAA 0 issue "other-ca.test"' ] };
$zones{'down.test'} = {
	before => [ map { a_record($_->{host}) } @unreachable ],
	after  => [ map { a_record($_->{host}, $nowhere) } @unreachable ] };
for my $s (@all)
{
	my ($zone) = $s->{host} =~ /^[^.]+\.(.+)$/;
	my $txt = qq{\@ TXT "appguard-client-id=$s->{client}"};
	push @{ $zones{$zone}{before} }, $txt;
	push @{ $zones{$zone}{after} }, $txt unless $zone eq 'owner.test';
}
$env->zone($_, $zones{$_}{before}) for sort keys %zones;
$env->start;
my $silent = $env->silent_dns;
note sprintf 'environment up in %.1f s', time - $t0;

# Trusted: the test root and the "untrusted" root, so that a certificate
# from another CA organization still verifies (tls_issuer_org_changed alone)
my $bundle = $env->dir . '/trust-bundle.pem';
{
	open my $out, '>', $bundle or die "$bundle: $!";
	for my $ca ('root', 'untrusted_root')
	{
		open my $in, '<', $env->ca_cert($ca) or die $!;
		print {$out} <$in>;
	}
}

my $lc = AppGuard::LifecycleTest->new('lifecycle_reasons', $env, conf => <<"CONF");
appguard.ca_file = '$bundle'
appguard.error_uri_template = 'https://auth.test/appguard/suspensions/{suspension_id}?client={client_id}'
CONF
my $port = $lc->port;

# ---------------------------------------------------------------- baseline
$lc->register($_->{client}, "App $_->{client}", $_->{host}) for @all;
my $facts = $lc->snapshot([ map { $_->{host} } @all ]);
for my $s (@all)
{
	my $f = $facts->{ $s->{host} };
	ok($f->{status} eq 'ok' && $f->{tls}{verified}, "baseline of $s->{host}: ok and verified")
	  or diag explain $f;
}
$lc->issue($_->{client}, "$_->{client}-t1", "$_->{client}-t2") for @all;
is($lc->sql(q{SELECT count(*) FILTER (WHERE g.baseline_snapshot_id IS NULL), count(*)
               FROM appguard.refresh_tokens t
                    LEFT JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass
                                               AND g.token_key = t.token_id}),
	'0|' . 2 * @all, 'every token took the cached snapshot as its baseline');

# ---------------------------------------------------------------- resolver outage
# Every DNS question times out during a sweep: every measurement fails,
# which is an unknown, never a change.
my ($out, $err) = $lc->try(<<"SQL");
SET appguard.dns_servers = '$silent';
SET appguard.dns_timeout_ms = 200;
CALL appguard_sweep('0 s', '2 min');
SQL
my ($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
is_deeply([ @$sweep{qw(state planned measured failed drifted suspended held)} ],
	[ 'finished', scalar @all, scalar @all, scalar @all, 0, 0, 0 ],
	'resolver outage: the sweep measured every host, all failed, none drifted, nothing suspended or held')
  or diag explain $sweep, $err;
is($lc->sql(qq{SELECT string_agg(DISTINCT s.status || '/' || (s.facts->'dns'->>'rcode'), ',')
               FROM appguard.sweep_hosts h JOIN appguard.snapshots s ON s.id = h.snapshot_id
               WHERE h.sweep_id = $sweep->{id}}),
	'dns_failed/TIMEOUT', 'resolver outage: every snapshot is dns_failed with rcode TIMEOUT');
is($lc->sql(q{SELECT count(*) FROM appguard.refresh_tokens WHERE status = 'active'}),
	2 * @all, 'resolver outage: every token is still active');
is($lc->sql('SELECT count(*) FROM appguard.suspensions'), '0', 'resolver outage: no suspension recorded');
is($lc->sql('SELECT count(*) FROM appguard.drifts'), '0', 'resolver outage: no drift recorded');

# ---------------------------------------------------------------- the changes
for my $s (@all)
{
	$env->tls_host($s->{host}, addr => $addr{ $s->{host} }, cert => "$s->{host}-after")
	  if $s->{after};
	$env->tls_host($s->{host}, addr => $addr{ $s->{host} }, cert => $s->{host},
		protocols => $s->{protocols_after})
	  if $s->{protocols_after};
}
$env->tls_host('renewal.tls.test', addr => $addr{'renewal.tls.test'}, cert => 'renewal-new');
$env->reload;
$env->zone_update($_, $zones{$_}{after}) for sort grep { $_ ne 'tls.test' } keys %zones;

# Every host but the unreachable ones with a grace, measured at once;
# each snapshot is evaluated as it is stored.
my @measured = grep { $_->{client} ne 'c-grace' && $_->{client} ne 'c-warn' } @all;
$facts = $lc->snapshot([ map { $_->{host} } @measured ], listen => ['appguard_suspension']);
my @notified = map { /payload "(\d+)"/ ? $1 : () } $lc->notifications;

# ---------------------------------------------------------------- suspend reasons
my $refusal_text = 'Access for this app has been suspended because its security information changed since you approved it.';
sub check_value
{
	my ($got, $want, $what) = @_;
	return ref $want ? like($got // '', $want, $what) : is($got, $want, $what);
}

for my $s (@suspend)
{
	my $what = "$s->{reason} ($s->{host})";
	is($facts->{ $s->{host} }{status}, $s->{status} // 'ok', "$what: snapshot status");
	my @susp = $lc->suspensions($s->{client});
	is(scalar @susp, 1, "$what: one suspension") or next;
	my $su = $susp[0];
	is_deeply($su->{reasons}, [ $s->{reason} ], "$what: reasons are exactly [$s->{reason}]");
	is($su->{state}, 'applied', "$what: applied");
	is($su->{tokens_suspended}, 2, "$what: both tokens suspended");
	my ($d) = grep { $_->{field} eq $s->{field} && $_->{severity} eq 'suspend' } @{ $su->{diff} };
	ok($d && $d->{reason} eq $s->{reason}, "$what: diff has $s->{field} at suspend") or diag explain $su->{diff};
	is($d->{old}, $s->{old}, "$what: diff old value");
	check_value($d->{new}, $s->{new}, "$what: diff new value");

	my $uri = 'https://auth.test/appguard/suspensions/' . $su->{id} . '?client='
	  . ($s->{client} =~ s/([^A-Za-z0-9._~-])/sprintf '%%%02X', ord $1/ger);
	is($su->{error_uri}, $uri, "$what: error_uri from the template, URL-encoded");
	for my $tok ("$s->{client}-t1", "$s->{client}-t2")
	{
		my $t = $lc->token($tok);
		ok($t->{status} eq 'suspended' && $t->{suspension_id} == $su->{id}
			  && $t->{error_uri} eq $uri && defined $t->{suspended_at},
			"$what: token $tok suspended with suspension id, error_uri, suspended_at");
	}
	is_deeply($lc->check_refresh("$s->{client}-t1"),
		{ allowed => JSON::PP::false, error => { error => 'invalid_grant',
				error_description => $refusal_text, error_uri => $uri } },
		"$what: appguard_check_refresh gives the invalid_grant body with the error_uri");
	ok((grep { $_ == $su->{id} } @notified), "$what: NOTIFY appguard_suspension with the suspension id");
	# appguard_drifted is about active grants: none is left
	is($lc->sql('SELECT appguard_drifted(' . lit($s->{client}) . ')'), 'f',
		"$what: appguard_drifted is false once no active grant is left");
	is($lc->sql("SELECT count(*) FROM appguard.events WHERE kind = 'suspension_applied' AND suspension_id = $su->{id}"),
		'1', "$what: audited as suspension_applied");
}

# The explanation of the identity change, in words
my ($identity) = $lc->suspensions('identity app/1');
my $ex = $lc->json("SELECT appguard_explain($identity->{id})");
is($ex->{app_name}, 'App identity app/1', 'explain: app name');
is($ex->{domain}, 'tls.test', 'explain: registrable domain');
is($ex->{changes}[0]{text},
	"The organization or location named in the app's certificate changed (organization in the certificate): Example Health, Inc. → Other Health Corp",
	'explain: the change in words, old → new');
like($ex->{summary}, qr/^The security information of App identity app\/1 \(tls\.test\) changed after you approved it/,
	'explain: summary');
like($ex->{how_to_reapprove}, qr/approve its access once more/, 'explain: how to re-approve');

# ---------------------------------------------------------------- warn reasons
for my $s (@warn)
{
	my $what = "$s->{reason} ($s->{host})";
	is($facts->{ $s->{host} }{status}, 'ok', "$what: snapshot ok");
	my @d = $lc->rows('SELECT reason, severity, field, old_value #>> \'{}\' AS old, new_value::text AS new_json,
	                          new_value #>> \'{}\' AS new
	                   FROM appguard.drifts WHERE client_id = ' . lit($s->{client}));
	my ($d) = grep { $_->{reason} eq $s->{reason} } @d;
	ok($d && $d->{severity} eq 'warn' && $d->{field} eq $s->{field}, "$what: recorded in appguard.drifts at warn")
	  or diag explain \@d;
	check_value($d->{old}, $s->{old}, "$what: old value");
	check_value($d->{new}, $s->{new}, "$what: new value");
	ok(!(grep { $_->{severity} eq 'suspend' } @d), "$what: nothing at suspend level");
	is(scalar $lc->suspensions($s->{client}), 0, "$what: no suspension");
	is($lc->sql(q{SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = } . lit($s->{client})),
		'active,active', "$what: tokens active");
	is_deeply($lc->check_refresh("$s->{client}-t1"), { allowed => JSON::PP::true }, "$what: refresh allowed");
	is($lc->sql('SELECT drift_state FROM appguard.client_status WHERE client_id = ' . lit($s->{client})),
		'warn', "$what: client_status says warn");
	is($lc->sql('SELECT appguard_drifted(' . lit($s->{client}) . ')'), 'f', "$what: appguard_drifted is false");
}

# ---------------------------------------------------------------- renewal
{
	my $f = $facts->{'renewal.tls.test'};
	my ($t1) = $lc->token('c-renewal-t1');
	my %diff = map { ($_->{reason} => $_->{severity}) }
	  $lc->rows("SELECT reason, severity FROM appguard_diff($t1->{baseline_snapshot_id}, "
		  . "(SELECT last_snapshot_id FROM appguard.clients WHERE client_id = 'c-renewal'), 'c-renewal')");
	is_deeply(\%diff, {
			tls_serial_changed => 'ignore', tls_fingerprint_changed => 'ignore',
			tls_spki_changed => 'ignore', tls_validity_changed => 'ignore',
			tls_intermediate_changed => 'ignore' },
		'renewal: new serial, fingerprint, key, dates and intermediate, all at ignore, nothing else')
	  or diag explain \%diff;
	like($f->{tls}{chain}[1]{subject}, qr/Issuing CA 2/, 'renewal: served through intermediate2');
	is(scalar $lc->suspensions('c-renewal'), 0, 'renewal: no suspension');
	is($lc->sql(q{SELECT count(*) FROM appguard.drifts WHERE client_id = 'c-renewal'}), '0',
		'renewal: no drift recorded (ignore-level differences are not)');
	is_deeply($lc->check_refresh('c-renewal-t2'), { allowed => JSON::PP::true }, 'renewal: refresh allowed');
	is($lc->sql(q{SELECT drift_state FROM appguard.client_status WHERE client_id = 'c-renewal'}), 'ok',
		'renewal: client_status ok');
}

# ---------------------------------------------------------------- unreachable
is($facts->{'off.down.test'}{status}, 'connect_failed', 'unreachable: the host refuses connections');
is($lc->sql(q{SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = 'c-off'}),
	'active,active', 'unreachable, grace off (default): tokens stay active');

# within the grace: nothing
$facts = $lc->snapshot(['grace.down.test'], set => { 'appguard.unreachable_grace' => '1 h' });
is($facts->{'grace.down.test'}{status}, 'connect_failed', 'unreachable within the grace: connect_failed');
is(scalar $lc->suspensions('c-grace'), 0, 'unreachable within the grace (1 h): no suspension');

# longer than the grace: suspended, reason host_unreachable; with the
# grace off (the default) never, however long
ok($lc->poll(q{SELECT bool_and(clock_timestamp() - last_ok_at > interval '1.2 s') FROM appguard.clients
               WHERE client_id IN ('c-grace', 'c-off')}, 10), 'unreachable for more than 1.2 s');
$lc->snapshot(['off.down.test']);
is(scalar $lc->suspensions('c-off'), 0, 'unreachable, grace off (default): never suspended');
is($lc->sql(q{SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = 'c-off'}),
	'active,active', 'unreachable, grace off: tokens active');
$lc->snapshot(['grace.down.test'], set => { 'appguard.unreachable_grace' => '1 s' });
my ($g) = $lc->suspensions('c-grace');
is_deeply($g && $g->{reasons}, ['host_unreachable'], 'unreachable past the grace (1 s): suspended for host_unreachable');
is_deeply($g && $g->{diff}, [ { reason => 'host_unreachable', severity => 'suspend', field => 'status',
			old => 'ok', new => 'connect_failed' } ], 'host_unreachable: the diff says ok → connect_failed');
is($lc->sql(q{SELECT string_agg(status, ',') FROM appguard.refresh_tokens WHERE client_id = 'c-grace'}),
	'suspended,suspended', 'host_unreachable: both tokens suspended');
like($lc->json("SELECT appguard_explain($g->{id})")->{summary},
	qr/could not be reached for longer than the grace period \(reachability of the app\): ok → connect_failed/,
	'host_unreachable: explained');

# a client policy lowers host_unreachable to warn: recorded, not suspended
$lc->sql(q{INSERT INTO appguard.client_policy VALUES ('c-warn', 'host_unreachable', 'warn')});
$lc->snapshot(['warn.down.test'], set => { 'appguard.unreachable_grace' => '1 s' });
is(scalar $lc->suspensions('c-warn'), 0, 'host_unreachable at warn (client policy): no suspension');
is($lc->sql(q{SELECT severity || ':' || reason FROM appguard.drifts WHERE client_id = 'c-warn'}),
	'warn:host_unreachable', 'host_unreachable at warn: recorded in appguard.drifts');

# ---------------------------------------------------------------- persisting drift
# Measuring everything again changes nothing: one suspension per drifted
# baseline, drifts recorded once.
my $drifts = $lc->sql('SELECT count(*) FROM appguard.drifts');
$lc->snapshot([ map { $_->{host} } grep { $_->{client} !~ /^c-(grace|warn|off)$/ } @all ]);
is($lc->sql('SELECT count(*) FROM appguard.suspensions'), scalar(@suspend) + 1,
	'measured again: no new suspension');
is($lc->sql('SELECT count(*) FROM appguard.drifts'), $drifts, 'measured again: persisting drift is not recorded again');

note sprintf 'done in %.1f s', time - $t0;
done_testing();
