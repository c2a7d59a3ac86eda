# Dangling names against a real DNS server (knotd) and real TLS servers
# (nginx): a redirect host that is an alias (CNAME) whose target is then
# deleted (NXDOMAIN at the chain's end) or keeps its name but loses its
# address (NODATA) is suspended for dns_dangling_cname, never for
# dns_domain_gone, and the refresh check refuses its tokens.  An alias into
# another registrable domain is recorded as such in the facts
# (dns.cname_target_domain, dns.cname_cross_domain); when its target is
# deleted (the setting of a subdomain takeover) it is suspended as well.
# A SERVFAIL of an alias's zone is an unknown and suspends nothing.
#
# Zones change at runtime as in 030_lifecycle_reasons.pl: every host is
# measured at baseline, tokens are issued, the zones are updated (knotd
# reloads them), and every host is measured again.
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

# ---------------------------------------------------------------- scenarios
# Each host is an alias of a target with an A record at baseline.
my @suspend = (
	{
		# the target is deleted from the host's own zone
		host => 'app.dangle-nx.test', client => 'c-nx', target => 'shop.dangle-nx.test',
		rcode => 'NXDOMAIN', target_domain => 'dangle-nx.test', cross => JSON::PP::false,
	},
	{
		# the target's name stays (a TXT record), its address goes
		host => 'app.dangle-nodata.test', client => 'c-nodata', target => 'shop.dangle-nodata.test',
		rcode => 'NOERROR', target_domain => 'dangle-nodata.test', cross => JSON::PP::false,
	},
	{
		# an alias into another registrable domain (a cloud provider's),
		# whose resource is then deleted; one zone "test" holds both names,
		# as knotd follows a CNAME only within a zone
		host => 'app.xdom.test', client => 'c-xdom', target => 'edge.cloudhost.test',
		rcode => 'NXDOMAIN', target_domain => 'cloudhost.test', cross => JSON::PP::true,
	},
);
my $servfail = { host => 'app.dangle-sf.test', client => 'c-sf', target => 'shop.dangle-sf.test' };
my @all = (@suspend, $servfail);

$env->certs(map { $_->{host} => { key => 'ec256' } } @all);
my %addr;
$addr{ $_->{host} } = $env->tls_host($_->{host}, cert => $_->{host}) for @all;

# before: host CNAME target, target A; after: see each scenario
my %zones;
for my $s (grep { $_->{host} =~ /\.dangle-\w+\.test$/ } @all)
{
	my ($zone) = $s->{host} =~ /^app\.(.+)$/;
	my $txt = qq{\@ TXT "appguard-client-id=$s->{client}"};
	$zones{$zone}{before} = [ 'app CNAME shop', "shop A $addr{ $s->{host} }", $txt ];
	$zones{$zone}{after} = [ 'app CNAME shop', $txt ];
}
push @{ $zones{'dangle-nodata.test'}{after} }, 'shop TXT "decommissioned"';
$zones{test} = {
	before => [ 'app.xdom CNAME edge.cloudhost', "edge.cloudhost A $addr{'app.xdom.test'}",
		'xdom TXT "appguard-client-id=c-xdom"' ],
	after => [ 'app.xdom CNAME edge.cloudhost', 'xdom TXT "appguard-client-id=c-xdom"' ],
};
$env->zone($_, $zones{$_}{before}) for sort keys %zones;
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

my $lc = AppGuard::LifecycleTest->new('lifecycle_dangling', $env, conf => <<"CONF");
appguard.error_uri_template = 'https://auth.test/appguard/suspensions/{suspension_id}?client={client_id}'
CONF

is($lc->sql(q{SELECT severity FROM appguard.policy WHERE reason = 'dns_dangling_cname'}), 'suspend',
	'policy: dns_dangling_cname suspends by default');

# ---------------------------------------------------------------- baseline
$lc->register($_->{client}, "App $_->{client}", $_->{host}) for @all;
my $facts = $lc->snapshot([ map { $_->{host} } @all ]);
for my $s (@all)
{
	my $what = "baseline of $s->{host}";
	my $f = $facts->{ $s->{host} };
	ok($f->{status} eq 'ok' && $f->{tls}{verified}, "$what: ok and verified") or diag explain $f;
	is($f->{schema}, 2, "$what: facts schema 2");
	is_deeply($f->{dns}{cname}, [ $s->{target} ], "$what: the chain");
	is_deeply($f->{dns}{a}, [ $addr{ $s->{host} } ], "$what: the target's address");
}
for my $s (@suspend)
{
	my $f = $facts->{ $s->{host} };
	is($f->{dns}{cname_target_domain}, $s->{target_domain},
		"baseline of $s->{host}: the chain ends under $s->{target_domain}");
	is($f->{dns}{cname_cross_domain}, $s->{cross},
		"baseline of $s->{host}: cname_cross_domain " . ($s->{cross} ? 'true' : 'false'));
}
is($facts->{'app.xdom.test'}{dns}{registrable_domain}, 'xdom.test',
	"the cross-domain alias's own registrable domain");
$lc->issue($_->{client}, "$_->{client}-t1", "$_->{client}-t2") for @all;

# ---------------------------------------------------------------- the changes
$env->zone_update($_, $zones{$_}{after}) for sort grep { $_ ne 'dangle-sf.test' } keys %zones;
$env->servfail_zone('dangle-sf.test');
is($env->dns_query('app.dangle-nx.test', 'A')->{rcode}, 'NXDOMAIN', 'knotd: the chain of dangle-nx ends in NXDOMAIN');
is($env->dns_query('app.dangle-nodata.test', 'A')->{rcode}, 'NOERROR', 'knotd: the chain of dangle-nodata ends in NODATA');

$facts = $lc->snapshot([ map { $_->{host} } @all ], listen => ['appguard_suspension']);
my @notified = map { /payload "(\d+)"/ ? $1 : () } $lc->notifications;

my $refusal_text = 'Access for this app has been suspended because its security information changed since you approved it.';
for my $s (@suspend)
{
	my $what = "dns_dangling_cname ($s->{host}, $s->{rcode})";
	my $f = $facts->{ $s->{host} };
	is($f->{status}, 'dns_failed', "$what: no address, so dns_failed");
	is($f->{dns}{rcode}, $s->{rcode}, "$what: rcode $s->{rcode}");
	is_deeply([ @{ $f->{dns} }{qw(cname a aaaa)} ], [ [ $s->{target} ], [], [] ],
		"$what: the chain is still there, with no address at its end");
	is($f->{dns}{cname_cross_domain}, $s->{cross}, "$what: cname_cross_domain still recorded");

	my @susp = $lc->suspensions($s->{client});
	is(scalar @susp, 1, "$what: one suspension") or next;
	my $su = $susp[0];
	is_deeply($su->{reasons}, ['dns_dangling_cname'], "$what: reasons are exactly [dns_dangling_cname]");
	is($su->{state}, 'applied', "$what: applied");
	is($su->{tokens_suspended}, 2, "$what: both tokens suspended");
	is_deeply($su->{diff}, [ { reason => 'dns_dangling_cname', severity => 'suspend', field => 'dns.cname',
				old => qq{["$s->{target}"]}, new => qq{["$s->{target}"]} } ],
		"$what: the diff is the chain, at baseline and now, and nothing else")
	  or diag explain $su->{diff};

	my $uri = "https://auth.test/appguard/suspensions/$su->{id}?client=$s->{client}";
	is($su->{error_uri}, $uri, "$what: error_uri");
	is($lc->sql('SELECT string_agg(status, \',\') FROM appguard.refresh_tokens WHERE client_id = '
		  . lit($s->{client})), 'suspended,suspended', "$what: both tokens suspended");
	is_deeply($lc->check_refresh("$s->{client}-t1"),
		{ allowed => JSON::PP::false, error => { error => 'invalid_grant',
				error_description => $refusal_text, error_uri => $uri } },
		"$what: appguard_check_refresh refuses with the invalid_grant body");
	ok((grep { $_ == $su->{id} } @notified), "$what: NOTIFY appguard_suspension");
	my $ex = $lc->json("SELECT appguard_explain($su->{id})");
	is($ex->{changes}[0]{description}, "The app's web address points to a service that no longer exists",
		"$what: explained in plain words");
}
is($lc->sql(q{SELECT count(*) FROM appguard.drifts WHERE reason = 'dns_domain_gone'}), '0',
	'no alias counted as a domain gone');

# ---------------------------------------------------------------- SERVFAIL
{
	my $what = 'SERVFAIL of the alias zone';
	my $f = $facts->{'app.dangle-sf.test'};
	is("$f->{status}/$f->{dns}{rcode}", 'dns_failed/SERVFAIL', "$what: dns_failed, rcode SERVFAIL");
	is(scalar $lc->suspensions('c-sf'), 0, "$what: no suspension");
	is($lc->sql(q{SELECT count(*) FROM appguard.drifts WHERE client_id = 'c-sf'}), '0', "$what: no drift");
	is_deeply($lc->check_refresh('c-sf-t1'), { allowed => JSON::PP::true }, "$what: refresh allowed");
}

# ---------------------------------------------------------------- persisting
# Measured again: still dangling, no new suspension.
$lc->snapshot([ map { $_->{host} } @suspend ]);
is($lc->sql('SELECT count(*) FROM appguard.suspensions'), scalar @suspend,
	'measured again: no new suspension');

note sprintf 'done in %.1f s', time - $t0;
done_testing();
