# The "dns" facts of appguard_probe / appguard_snapshot against a real
# authoritative DNS server (knotd) serving test zones, and against a server
# that never answers: CNAME chains, address sets and the address connected
# to, CAA tree climbing, ownership TXT records, the registrable domain and
# every response code a probe must keep distinct.
use strict;
use warnings;

use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node);

my $t0   = time;
my $env  = AppGuard::TestEnv->new;
my $net  = $env->net;
my $port = $env->tls_port;
my $json = JSON::PP->new->canonical;

# ---------------------------------------------------------------- servers
# EC keys: cheap to make, and the key type plays no part here.
my @names = qw(www.example.test alias.example.test low.example.test
  v6.example.test v6multi.example.test caa.example.test deep.sub.example.test app.example.co.uk);
$env->certs(map { $_ => { key => 'ec256' } } @names);

my %addr;
$addr{$_} = $env->tls_host($_, cert => $_)
  for qw(www.example.test caa.example.test deep.sub.example.test app.example.co.uk);
# the CNAME chain ends at target.example.test; the certificate is for the
# name asked (SNI), served at the target's address
$addr{'target.example.test'} = $env->tls_host('alias.example.test', cert => 'alias.example.test');
$env->tls_host('v6.example.test', cert => 'v6.example.test', addr => '::1');
$env->tls_host('v6multi.example.test', cert => 'v6multi.example.test', addr => '::1');

# Several A records: numeric order and text order differ (.9 < .10 < .100),
# and each address serves the host, so tls.address tells which one was used.
my @multi = map { "$net.9.$_" } 100, 10, 9;
$env->tls_host('low.example.test', cert => 'low.example.test', addr => $_) for @multi;

$env->zone(
	'example.test',
	[
		"www A $addr{'www.example.test'}",
		'alias CNAME alias2',
		'alias2 CNAME alias3.example.test.',
		'alias3 CNAME target',
		"target A $addr{'target.example.test'}",
		(map { "low A $_" } @multi),
		'v6 AAAA ::1',
		# 2001:db8::/32 is documentation space: never connected to (the
		# guard refuses it), here only to sort before ::1 as text
		'v6multi AAAA 2001:db8::1',
		'v6multi AAAA ::1',
		"caa A $addr{'caa.example.test'}",
		'caa CAA 0 issue "other-ca.test; account=42"',
		"deep.sub A $addr{'deep.sub.example.test'}",
		'txtonly TXT "no address here"',
		'@ CAA 0 issue "ca.test"',
		'@ CAA 0 iodef "mailto:security@example.test"',
		'@ CAA 128 issuewild ";"',
		'@ TXT "v=spf1 -all"',
		'@ TXT "appguard-client-id=app2"',
		'@ TXT "appguard-client-id=app1"',
		'@ TXT "appguard-client-" "id=split"',
		'@ TXT "appguard-client-id="',
		'@ TXT "other-prefix=app9"',
		'@ NS ns2.provider.test.',
		'@ NS NS1.Provider.Test.',
	]);
$env->zone('example.co.uk', [ "app A $addr{'app.example.co.uk'}", '@ TXT "unrelated"' ]);
$env->servfail_zone('broken.test');
$env->start;
my $silent = $env->silent_dns;
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- cluster
my $node = start_node('snapshot_dns', $env);

sub probe
{
	my ($host, %o) = @_;
	return AppGuard::TestNode::probe($node, $host, port => $port, %o);
}

my %ALL_NOERROR = map { $_ => 'NOERROR' } qw(A AAAA NS TXT CAA);

# ---------------------------------------------------------------- a plain host
{
	my $f = probe('www.example.test');
	is($f->{status}, 'ok', 'www: status ok');
	is($f->{dns}{rcode}, 'NOERROR', 'www: rcode NOERROR');
	is_deeply($f->{dns}{queries}, \%ALL_NOERROR, 'www: every question answered NOERROR');
	is_deeply($f->{dns}{a}, [ $addr{'www.example.test'} ], 'www: dns.a');
	is_deeply($f->{dns}{aaaa}, [], 'www: no AAAA');
	is_deeply($f->{dns}{cname}, [], 'www: no CNAME');
	ok(exists $f->{dns}{cname_target_domain} && !defined $f->{dns}{cname_target_domain}
		  && exists $f->{dns}{cname_cross_domain} && !defined $f->{dns}{cname_cross_domain},
		'www: no chain, so no chain end: cname_target_domain and cname_cross_domain null');
	is($f->{dns}{ad}, JSON::PP::false, 'www: AD bit not set by an authoritative server');
	is($f->{dns}{registrable_domain}, 'example.test', 'www: registrable domain');
	is_deeply($f->{dns}{ns}, [ 'ns1.provider.test', 'ns2.provider.test' ],
		'www: NS set of the registrable domain, sorted, lower case, no final dot');
	is($f->{tls}{address}, $addr{'www.example.test'}, 'www: connected to its A');
}

# ---------------------------------------------------------------- CNAME chain
{
	my $f = probe('alias.example.test');
	is($f->{status}, 'ok', 'cname: status ok');
	is_deeply($f->{dns}{cname},
		[ 'alias2.example.test', 'alias3.example.test', 'target.example.test' ],
		'cname: the chain, in order');
	is($f->{dns}{cname_target_domain}, 'example.test', "cname: the chain end's registrable domain");
	is($f->{dns}{cname_cross_domain}, JSON::PP::false, "cname: the chain ends in the host's own registrable domain");
	is_deeply($f->{dns}{a}, [ $addr{'target.example.test'} ], 'cname: dns.a is the final A');
	is($f->{tls}{address}, $addr{'target.example.test'}, 'cname: connected to the final A');
	is($f->{tls}{sni}, 'alias.example.test', 'cname: SNI is the name asked, not the target');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'cname: the certificate is for the name asked');
	is($f->{tls}{verified}, JSON::PP::true, 'cname: verified');
}

# ---------------------------------------------------------------- several A
{
	my $f = probe('low.example.test');
	is($f->{status}, 'ok', 'several A: status ok');
	is_deeply($f->{dns}{a}, [ map { "$net.9.$_" } 9, 10, 100 ],
		'several A: dns.a sorted by address');
	is($f->{tls}{address}, "$net.9.9", 'several A: the lowest address is connected');
	is($f->{tls}{address}, $f->{dns}{a}[0], 'several A: the first of dns.a is connected');
}

# ---------------------------------------------------------------- AAAA ::1
{
	my $f = probe('v6.example.test', port => $env->tls6_port);
	is($f->{status}, 'ok', 'AAAA only: status ok');
	is_deeply($f->{dns}{a}, [], 'AAAA only: no A');
	is_deeply($f->{dns}{aaaa}, ['::1'], 'AAAA only: dns.aaaa');
	is($f->{dns}{queries}{A}, 'NOERROR', 'AAAA only: the A question got NOERROR (no data)');
	is($f->{tls}{address}, '::1', 'AAAA only: tls.address ::1');
	is($f->{port}, $env->tls6_port, 'AAAA only: port');
	is($f->{tls}{verified}, JSON::PP::true, 'AAAA only: verified');

	$f = probe('v6multi.example.test', port => $env->tls6_port);
	is_deeply($f->{dns}{aaaa}, [ '::1', '2001:db8::1' ], 'several AAAA: sorted by address');
	is($f->{tls}{address}, '::1', 'several AAAA: the lowest is connected');
	is($f->{tls}{sni}, 'v6multi.example.test', 'several AAAA: SNI');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'several AAAA: its own certificate, by SNI');
}

# ---------------------------------------------------------------- CAA
{
	my @apex = (
		{ flags => 0, tag => 'iodef', value => 'mailto:security@example.test' },
		{ flags => 0, tag => 'issue', value => 'ca.test' },
		{ flags => 128, tag => 'issuewild', value => ';' });
	my $f = probe('www.example.test');
	is_deeply($f->{dns}{caa}, \@apex, 'CAA: the apex set (flags, tag, value), sorted');
	is($f->{dns}{caa_domain}, 'example.test', 'CAA: www has none, the climb finds the apex');

	$f = probe('deep.sub.example.test');
	is_deeply($f->{dns}{caa}, \@apex, 'CAA: two levels below (one an empty non-terminal)');
	is($f->{dns}{caa_domain}, 'example.test', 'CAA: found at the apex');
	is($f->{dns}{registrable_domain}, 'example.test', 'deep: registrable domain');
	is($f->{status}, 'ok', 'deep: status ok');

	$f = probe('caa.example.test');
	is_deeply($f->{dns}{caa}, [ { flags => 0, tag => 'issue', value => 'other-ca.test; account=42' } ],
		"CAA: the host's own set wins");
	is($f->{dns}{caa_domain}, 'caa.example.test', 'CAA: found at the host');

	$f = probe('app.example.co.uk');
	is_deeply($f->{dns}{caa}, [], 'no CAA anywhere: empty set');
	is($f->{dns}{caa_domain}, undef, 'no CAA anywhere: caa_domain null');
	# the climb ends at co.uk, which this server is not authoritative for
	is($f->{dns}{queries}{CAA}, 'REFUSED', 'no CAA anywhere: the last step of the climb was refused');
}

# ---------------------------------------------------------------- TXT and ownership
{
	my $f = probe('www.example.test');
	is_deeply($f->{dns}{txt},
		[ 'appguard-client-id=', 'appguard-client-id=app1', 'appguard-client-id=app2',
		  'appguard-client-id=split', 'other-prefix=app9', 'v=spf1 -all' ],
		'TXT at the registrable domain, strings of a record joined, sorted');
	is_deeply($f->{dns}{ownership_ids}, [ 'app1', 'app2', 'split' ],
		'ownership present: ids, sorted, a split record joined, an empty id ignored');

	$f = probe('www.example.test', set => { ownership_prefix => 'other-prefix' });
	is_deeply($f->{dns}{ownership_ids}, ['app9'], 'appguard.ownership_prefix chooses the records');

	$f = probe('app.example.co.uk');
	is($f->{status}, 'ok', 'example.co.uk: status ok');
	is($f->{dns}{registrable_domain}, 'example.co.uk',
		'registrable domain from the public suffix list (co.uk is a suffix)');
	is_deeply($f->{dns}{txt}, ['unrelated'], 'example.co.uk: TXT asked at the registrable domain');
	is_deeply($f->{dns}{ownership_ids}, [], 'ownership absent: empty');
	is_deeply($f->{dns}{ns}, ['ns.agenv.test'], 'example.co.uk: NS');
}

# ---------------------------------------------------------------- failures
sub check_dns_failed
{
	my ($f, $rcode, $what) = @_;
	is($f->{status}, 'dns_failed', "$what: status dns_failed");
	is($f->{dns}{rcode}, $rcode, "$what: rcode $rcode");
	is($f->{tls}, undef, "$what: tls null (no connection)");
	is_deeply($f->{dns}{a}, [], "$what: no A");
	is_deeply($f->{dns}{aaaa}, [], "$what: no AAAA");
	like($f->{error}, qr/has no IPv4 or IPv6 address/, "$what: error says why");
}
{
	my ($f, $wall) = probe('missing.example.test');
	check_dns_failed($f, 'NXDOMAIN', 'NXDOMAIN');
	is($f->{dns}{queries}{A}, 'NXDOMAIN', 'NXDOMAIN: A');
	is($f->{dns}{queries}{AAAA}, 'NXDOMAIN', 'NXDOMAIN: AAAA');
	is($f->{dns}{queries}{TXT}, 'NOERROR', 'NXDOMAIN: the registrable domain still answers');
	is_deeply($f->{dns}{ownership_ids}, [ 'app1', 'app2', 'split' ], 'NXDOMAIN: ownership still read');

	$f = probe('txtonly.example.test');
	check_dns_failed($f, 'NOERROR', 'NOERROR without data');
	is($f->{dns}{queries}{A}, 'NOERROR', 'NOERROR without data: A NOERROR');
	is($f->{dns}{queries}{AAAA}, 'NOERROR', 'NOERROR without data: AAAA NOERROR');

	$f = probe('www.broken.test');
	check_dns_failed($f, 'SERVFAIL', 'SERVFAIL');
	is($f->{dns}{queries}{A}, 'SERVFAIL', 'SERVFAIL: A');
	is($f->{dns}{queries}{AAAA}, 'SERVFAIL', 'SERVFAIL: AAAA');
	is($f->{dns}{registrable_domain}, 'broken.test', 'SERVFAIL: registrable domain');
	is($f->{dns}{queries}{TXT}, 'SERVFAIL', 'SERVFAIL: TXT');

	$f = probe('www.nozone.test');
	check_dns_failed($f, 'REFUSED', 'REFUSED (a name in no zone)');
	is($f->{dns}{queries}{AAAA}, 'REFUSED', 'REFUSED: AAAA');
	is($f->{dns}{queries}{CAA}, 'REFUSED', 'REFUSED: CAA');

	# a server that never answers: every question times out, well before
	# the probe's own deadline
	$f = probe('www.example.test',
		set => { dns_servers => $silent, dns_timeout_ms => 600, timeout_ms => 5000 });
	check_dns_failed($f, 'TIMEOUT', 'no answer');
	is_deeply($f->{dns}{queries}, { map { $_ => 'TIMEOUT' } qw(A AAAA NS TXT CAA) },
		'no answer: every question TIMEOUT');
	cmp_ok($f->{elapsed_ms}, '>=', 500, "no answer: waited for the DNS timeout ($f->{elapsed_ms} ms)");
	cmp_ok($f->{elapsed_ms}, '<', 5000, 'no answer: ended below the probe timeout');
	cmp_ok($wall, '<', 5, sprintf('no answer: the call returned in %.2f s', $wall));
}

# ---------------------------------------------------------------- stored
{
	my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM appguard.snapshots');
	is($before, 0, 'appguard_probe stored nothing');
	for my $host ('alias.example.test', 'missing.example.test', 'www.nozone.test')
	{
		my $f = probe($host, store => 1);
		my $id = delete $f->{id};
		my $row = $node->safe_psql('postgres',
			"SELECT json_build_object('facts', facts, 'status', status, 'n', cardinality(chain)) "
			  . "FROM appguard.snapshots WHERE id = $id");
		my $stored = $json->decode($row);
		is_deeply($stored->{facts}, $f, "snapshot $host: stored facts = returned minus id");
		is($stored->{status}, $f->{status}, "snapshot $host: status column $f->{status}");
		is($stored->{n}, $f->{tls} ? scalar @{ $f->{tls}{chain} } : 0, "snapshot $host: chain column");
	}
	is($node->safe_psql('postgres', 'SELECT count(*) FROM appguard.snapshots'), 3,
		'three snapshots stored');
}

# ---------------------------------------------------------------- shared questions
# One appguard_snapshot_many call (as one sweep) asks NS and TXT once per
# registrable domain and each CAA name once, and hands the answers to every
# probe that asks: each host's facts must be those it gets probed alone.
# SERVFAIL and REFUSED answers are not reused for later askers.
{
	my @hosts = qw(www.example.test alias.example.test low.example.test caa.example.test
	  deep.sub.example.test missing.example.test txtonly.example.test app.example.co.uk
	  www.broken.test other.broken.test www.nozone.test);
	my %volatile = map { $_ => 1 } qw(id taken_at elapsed_ms);
	my $stable = sub { my ($f) = @_; return { map { $_ => $f->{$_} } grep { !$volatile{$_} } keys %$f } };
	my %alone = map { $_ => $stable->(probe($_)) } @hosts;
	my $list = join ',', map { "'$_'" } @hosts;
	my ($out, $err) = ('', '');
	$node->psql('postgres',
		"SET client_min_messages = debug1;
		 SELECT appguard_snapshot_many(ARRAY[$list], array_fill($port, ARRAY[" . scalar(@hosts) . ']))',
		stdout => \$out, stderr => \$err, on_error_die => 1);
	my %many = map { my $f = $json->decode($_); ($f->{host} => $stable->($f)) } split /\n/, $out;
	is_deeply([ sort keys %many ], [ sort @hosts ], 'shared: one snapshot per host');
	for my $host (@hosts)
	{
		is_deeply($many{$host}{dns}, $alone{$host}{dns}, "shared: $host: dns facts as when probed alone");
		is_deeply($many{$host}, $alone{$host}, "shared: $host: every fact as when probed alone");
	}
	my ($sent, $joined) = $err =~ /(\d+) shared DNS questions sent, (\d+) asks answered by them/
	  or BAIL_OUT("no engine summary in: $err");
	# seven hosts under example.test: NS and TXT asked once, six joins each
	cmp_ok($joined, '>=', 12,
		"shared: $joined asks answered by a question of the call (so that many fewer sent: $sent)");
}

$node->stop;
$env->stop;
note sprintf 'total %.1f s', time - $t0;
done_testing;
