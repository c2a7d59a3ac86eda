# The fault matrix: every DNS, TCP and TLS fault of issue 6 against a real
# server (knotd, nginx, openssl s_server) or, only where none can produce
# it, a scripted one (test/env/dnsfault.py, test/env/faultd.py).  Each case
# asserts the recorded status (a failed measurement is a snapshot with the
# failing phase, never an error) and that the probe ended within its
# deadline: elapsed_ms at most appguard.timeout_ms plus 500 ms, and the
# SQL call back within timeout + 2 s of wall time.
use strict;
use warnings;

use File::Path qw(make_path);
use IPC::Run ();
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;

my $t0   = time;
my $env  = AppGuard::TestEnv->new;
my $net  = $env->net;
my $port = $env->tls_port;
my $json = JSON::PP->new->utf8->canonical;
my $dir  = $env->dir . '/matrix';
make_path($dir);

# ---------------------------------------------------------------- certificates
sub run_ok { my ($o, $e) = ("", ""); IPC::Run::run([@_], "<", \undef, ">", \$o, "2>", \$e) or die "@_: $e$o"; return $o }

my ($ica, $ikey) = ($env->ca_cert('intermediate'), $env->ca_key('intermediate'));

# a leaf signed by the intermediate with openssl x509 -req: any serial,
# any extension text
sub odd_cert
{
	my ($name, %o) = @_;
	my $base = "$dir/$name";
	run_ok('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$base.key");
	run_ok('openssl', 'req', '-new', '-key', "$base.key", '-subj', $o{subj} // "/CN=$name",
		'-out', "$base.csr");
	open my $fh, '>', "$base.ext" or die;
	print $fh $o{ext} // "subjectAltName = DNS:$name\n";
	close $fh;
	run_ok('openssl', 'x509', '-req', '-in', "$base.csr", '-CA', $ica, '-CAkey', $ikey,
		'-set_serial', $o{serial} // '4242', '-days', 30, '-extfile', "$base.ext", '-out', "$base.crt");
	if ($o{patch})    # replace bytes in the DER as signed (the signature breaks: a fact too)
	{
		my $der = run_ok('openssl', 'x509', '-in', "$base.crt", '-outform', 'DER');
		my ($from, $to) = @{ $o{patch} };
		my $n = ($der =~ s/\Q$from\E/$to/);
		die "patch of $name not applied" unless $n;
		open my $pem, '>', "$base.crt" or die;
		print $pem "-----BEGIN CERTIFICATE-----\n", encode_base64($der), "-----END CERTIFICATE-----\n";
		close $pem;
	}
	if ($o{extra})    # more certificates sent after the leaf
	{
		open my $out, '>>', "$base.crt" or die;
		print $out $o{extra};
		close $out;
	}
	$env->add_cert($name, cert => "$base.crt", key => "$base.key");
	return $name;
}

my $ica_pem = do { local $/; open my $f, '<', $ica or die; <$f> };
my %tls_case = (
	'sans.tls.test' => odd_cert('sans.tls.test',
		ext => 'subjectAltName = DNS:sans.tls.test,'
		  . join(',', map { sprintf 'DNS:%04x.t', $_ } 1 .. 9999) . "\n"),
	'megachain.tls.test' => odd_cert('megachain.tls.test', extra => $ica_pem x 800),
	'baddersan.tls.test' => odd_cert('baddersan.tls.test',
		# a subjectAltName whose inner DER claims more bytes than it has
		ext => "2.5.29.17 = DER:30:05:82:10:62:61:64\n2.5.29.32 = DER:30:80:06\n"),
	'nul.tls.test' => odd_cert('nul.tls.test', subj => '/O=Good Org/CN=nul.tls.testQevil.test',
		ext => "subjectAltName = DNS:other.tls.test\n", patch => [ 'testQevil', "test\0evil" ]),
	'empty.tls.test' => odd_cert('empty.tls.test', subj => '/',
		ext => "subjectAltName = critical,DNS:empty.tls.test\n"),
	'negserial.tls.test' => odd_cert('negserial.tls.test', serial => '-42'),
	'hugeserial.tls.test' => odd_cert('hugeserial.tls.test', serial => '0x' . ('7f' x 40)),
	'critext.tls.test' => odd_cert('critext.tls.test',
		ext => "subjectAltName = DNS:critext.tls.test\n1.3.6.1.4.1.55555.1 = critical,ASN1:UTF8String:unknown\n"),
);
$env->certs(
	'past.tls.test'   => { key => 'ec256', not_before => '19500101000000Z', not_after => '19600101000000Z' },
	'future.tls.test' => { key => 'ec256', not_before => '90000101000000Z', not_after => '99991231235959Z' },
	'ok.tls.test'     => { key => 'ec256' },
	'alert.tls.test'  => { key => 'ec256' });
$tls_case{$_} = $_ for qw(past.tls.test future.tls.test);

my %addr;
$addr{$_} = $env->tls_host($_, cert => $tls_case{$_}) for sort keys %tls_case;
$addr{'ok.tls.test'} = $env->tls_host('ok.tls.test', cert => 'ok.tls.test');
my $alert_cert = $env->cert('alert.tls.test');
# s_server answers an SNI other than -servername with a fatal unrecognized_name alert
$addr{'alert.tls.test'} = $env->openssl_server('alert', '-cert', $alert_cert->{cert},
	'-key', $alert_cert->{key}, '-cert2', $alert_cert->{cert}, '-key2', $alert_cert->{key},
	'-servername', 'someone-else.test', '-servername_fatal');
$addr{'garbage.tcp.test'} = $env->fault_server('garbage', size => 300);
$addr{'http.tcp.test'}    = $env->fault_server('http', name => 'http.tcp.test');
$addr{'refused.tcp.test'} = $env->fault_server('refuse');
$addr{'reset.tcp.test'}   = $env->fault_server('reset');
$addr{'silent.tcp.test'}  = $env->fault_server('stall');
$addr{'slow.tcp.test'}    = $env->fault_server('slow', rate => 1);
$addr{'hello.tcp.test'}   = $env->fault_server('close_after_hello');

# knotd: the zone of the TCP/TLS cases, a zone it cannot load, a CAA walk
$env->zone('tls.test', [ map { "$_. A $addr{$_}" } grep { /\.tls\.test$/ } sort keys %addr ]);
$env->zone('tcp.test', [ map { "$_. A $addr{$_}" } grep { /\.tcp\.test$/ } sort keys %addr ]);
$env->zone('walk.test', [ "www A $addr{'ok.tls.test'}", '@ CAA 0 issue "ca.walk.test"' ]);
$env->servfail_zone('broken.test');
$env->start;
my $knot     = $env->dns_servers_guc;
my $silent   = $env->silent_dns;
my $dnsfault = $env->dns_fault_server(target => $addr{'ok.tls.test'}, late_ms => 2500);
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- cluster
my $node = PostgreSQL::Test::Cluster->new('fault_matrix');
$node->init;
$node->append_conf('postgresql.conf', $env->postgresql_conf);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION appguard');

my ($tried, $passed) = (0, 0);

# Probe HOST with settings; returns the facts with _wall (seconds)
sub probe
{
	my ($host, %set) = @_;
	$set{timeout_ms} //= 3000;
	my $sql = join('', map { "SET appguard.$_ = '$set{$_}';\n" } sort keys %set)
	  . "SELECT appguard_probe('$host', $port)";
	my $start = time;
	my $f = $json->decode($node->safe_psql('postgres', $sql));
	$f->{_wall} = time - $start;
	$f->{_timeout} = $set{timeout_ms};
	return $f;
}

# One case: the status, the deadline, and CHECKS->($facts) for the rest
sub case
{
	my ($what, $host, $status, $set, $checks) = @_;
	my $f = probe($host, %{ $set // {} });
	$tried++;
	my $ok = is($f->{status}, $status, "$what: status $status")
	  & cmp_ok($f->{elapsed_ms}, '<=', $f->{_timeout} + 500,
		"$what: ended within the deadline ($f->{elapsed_ms} ms of $f->{_timeout})")
	  & cmp_ok($f->{_wall}, '<', $f->{_timeout} / 1000 + 2, sprintf('%s: call returned (%.2f s)', $what, $f->{_wall}));
	$ok &= $checks->($f) if $checks;
	$passed++ if $ok;
	diag $json->encode({ %$f, tls => $f->{tls} ? '...' : undef }) unless $ok;
	return $f;
}

my %DNS = (dns_servers => $dnsfault, dns_timeout_ms => 600);

# ---------------------------------------------------------------- DNS
note 'DNS';
case('DNS control (scripted server, plain answers)', 'www.ok.test', 'ok', \%DNS, sub {
	is_deeply($_[0]{dns}{a}, [ $addr{'ok.tls.test'} ], 'control: dns.a');
});
case('DNS SERVFAIL (knotd, a zone it cannot load)', 'www.broken.test', 'dns_failed', { dns_servers => $knot }, sub {
	is($_[0]{dns}{rcode}, 'SERVFAIL', 'SERVFAIL: rcode kept');
});
case('DNS REFUSED (knotd, a name in no zone)', 'www.nozone.example', 'dns_failed', { dns_servers => $knot }, sub {
	is($_[0]{dns}{rcode}, 'REFUSED', 'REFUSED: rcode kept');
});
case('DNS no answer at all', 'www.walk.test', 'dns_failed', { dns_servers => $silent, dns_timeout_ms => 600 }, sub {
	is($_[0]{dns}{rcode}, 'TIMEOUT', 'silent server: TIMEOUT');
});
case('DNS answer after the deadline (2.5 s late, 600 ms allowed)', 'www.late.test', 'dns_failed', \%DNS, sub {
	is($_[0]{dns}{rcode}, 'TIMEOUT', 'late answer: TIMEOUT') & cmp_ok($_[0]{elapsed_ms}, '<', 2000, 'late answer: not waited for');
});
case('DNS truncated UDP answer, TCP fallback', 'www.trunc.test', 'ok', \%DNS, sub {
	is_deeply($_[0]{dns}{a}, [ $addr{'ok.tls.test'} ], 'truncated: the address came over TCP')
	  & is($_[0]{dns}{queries}{TXT}, 'NOERROR', 'truncated: TXT over TCP too')
	  & is_deeply($_[0]{dns}{ownership_ids}, ['fault-app'], 'truncated: TXT content');
});
case('DNS garbage after a valid header', 'www.garbage.test', 'dns_failed', \%DNS, sub {
	is_deeply($_[0]{dns}{queries}, { map { $_ => 'ERROR' } qw(A AAAA NS TXT CAA) },
		'garbage: every question ERROR, no NOERROR claimed for records that did not parse')
	  & is($_[0]{dns}{rcode}, 'ERROR', 'garbage: rcode ERROR')
	  & is_deeply($_[0]{dns}{txt}, [], 'garbage: no TXT');
});
case('DNS random bytes', 'www.noise.test', 'dns_failed', \%DNS, sub {
	is($_[0]{dns}{rcode}, 'TIMEOUT', 'noise: ignored, then TIMEOUT');
});
case('DNS wrong query id', 'www.wrongid.test', 'dns_failed', \%DNS, sub {
	is($_[0]{dns}{rcode}, 'TIMEOUT', 'wrong id: ignored (no spoofed answer taken), TIMEOUT');
});
case('DNS CNAME loop', 'www.loop.test', 'dns_failed', \%DNS, sub {
	my $c = $_[0]{dns}{cname};
	is(scalar @$c, 16, 'CNAME loop: the chain stops at 16 steps')
	  & is($c->[0], 'loop2.loop.test', 'CNAME loop: first step')
	  & is($c->[1], 'www.loop.test', 'CNAME loop: back to the start');
});
case('DNS CNAME chain longer than the limit (30)', 'www.chain.test', 'ok', \%DNS, sub {
	is(scalar @{ $_[0]{dns}{cname} }, 16, 'long chain: 16 steps recorded')
	  & is($_[0]{tls}{address}, $addr{'ok.tls.test'}, 'long chain: connected to its A');
});
case('DNS 1,000 records in one answer', 'www.many.test', 'ok', \%DNS, sub {
	is(scalar @{ $_[0]{dns}{a} }, 1000, '1,000 records: all recorded')
	  & is($_[0]{tls}{address}, $addr{'ok.tls.test'}, '1,000 records: the lowest address connected');
});
case('DNS oversized TXT (51 KB, TCP only)', 'www.bigtxt.test', 'ok', \%DNS, sub {
	is(scalar @{ $_[0]{dns}{txt} }, 1, 'oversized TXT: one record') & is(length $_[0]{dns}{txt}[0], 200 * 255,
		'oversized TXT: all 200 strings joined');
});
case('DNS NUL bytes in TXT and CAA', 'www.nul.test', 'ok', \%DNS, sub {
	my $d = $_[0]{dns};
	is_deeply($d->{txt}, [ "\x{fffd}hidden", "appguard-client-id=fault-app\x{fffd} (not really)",
			'appguard-client-id=nul-app' ],
		'NUL bytes: TXT records kept whole, each NUL written as U+FFFD')
	  & is_deeply($d->{ownership_ids}, [ "fault-app\x{fffd} (not really)", 'nul-app' ],
		'NUL bytes: a record cut at a NUL does not claim its prefix (fault-app)')
	  & is_deeply([ map { "$_->{tag} $_->{value}" } @{ $d->{caa} } ],
		[ "issue ca.test\x{fffd}a", "issue ca.test\x{fffd}b", "issue\x{fffd}x ca.test" ],
		'NUL bytes: CAA tags and values whole: issue\\0x is no issue tag, values differing after a NUL are two');
});
case('DNS NXDOMAIN on the CAA tree walk', 'gone.walk.test', 'dns_failed', { dns_servers => $knot }, sub {
	is($_[0]{dns}{rcode}, 'NXDOMAIN', 'walk: the host is NXDOMAIN')
	  & is($_[0]{dns}{caa_domain}, 'walk.test', 'walk: climbed past NXDOMAIN to the CAA set')
	  & is($_[0]{dns}{caa}[0]{value}, 'ca.walk.test', 'walk: the CAA record');
});

# ---------------------------------------------------------------- TCP
note 'TCP';
case('TCP refused', 'refused.tcp.test', 'connect_failed', {}, sub {
	like($_[0]{error}, qr/Connection refused/, 'refused: the error says so');
});
case('TCP reset mid-handshake', 'reset.tcp.test', 'tls_failed', {}, sub {
	like($_[0]{error}, qr/reset by peer/, 'reset: the error says so');
});
case('TCP accept then silence', 'silent.tcp.test', 'timeout', { timeout_ms => 1500 }, sub {
	like($_[0]{error}, qr/^no answer within 1500 ms while in the TLS handshake$/, 'silence: the phase')
	  & cmp_ok($_[0]{elapsed_ms}, '>=', 1500, 'silence: waited the deadline');
});
case('TCP one byte a second', 'slow.tcp.test', 'timeout', { timeout_ms => 1500 }, sub {
	like($_[0]{error}, qr/while in the TLS handshake/, 'one byte a second: the phase');
});
case('TCP close after the ClientHello', 'hello.tcp.test', 'tls_failed', {}, sub {
	like($_[0]{error}, qr/unexpected eof/, 'close after hello: the error says so');
});

# ---------------------------------------------------------------- TLS
note 'TLS';
case('TLS control', 'ok.tls.test', 'ok', {}, sub {
	is($_[0]{tls}{verified}, JSON::PP::true, 'control: verified');
});
case('TLS garbage instead of a handshake', 'garbage.tcp.test', 'tls_failed', {}, sub {
	like($_[0]{error}, qr/wrong version number/, 'garbage: OpenSSL says why');
});
case('TLS plaintext HTTP', 'http.tcp.test', 'tls_failed', {}, sub {
	like($_[0]{error}, qr/wrong version number/, 'plaintext: OpenSSL says why');
});
case('TLS an alert (unrecognized_name, fatal)', 'alert.tls.test', 'tls_failed', {}, sub {
	like($_[0]{error}, qr/unrecognized name/, 'alert: named');
});
case('TLS a 1 MB chain', 'megachain.tls.test', 'tls_failed', {}, sub {
	like($_[0]{error}, qr/excessive message size/, '1 MB chain: refused by the 100 KiB message limit');
});
case('TLS 10,000 SANs', 'sans.tls.test', 'ok', {}, sub {
	is(scalar @{ $_[0]{tls}{leaf}{san_dns} }, 10000, '10,000 SANs: all recorded')
	  & is($_[0]{tls}{hostname_match}, JSON::PP::true, '10,000 SANs: the name matched');
});
case('TLS malformed DER inside the leaf (SAN and policies)', 'baddersan.tls.test', 'ok', {}, sub {
	is_deeply($_[0]{tls}{leaf}{san_dns}, [], 'malformed SAN: no names read from it')
	  & is_deeply($_[0]{tls}{leaf}{policies}, [], 'malformed policies: none')
	  & is($_[0]{tls}{verified}, JSON::PP::false, 'malformed extensions: not verified')
	  & is($_[0]{tls}{hostname_match}, JSON::PP::true,
		'malformed SAN: OpenSSL falls back to the CN, as with no SAN (verification still fails)');
});
case('TLS NUL in the CN', 'nul.tls.test', 'ok', {}, sub {
	is($_[0]{tls}{leaf}{subject}{CN}, "nul.tls.test\x{fffd}evil.test", 'NUL in CN: recorded as U+FFFD')
	  & is($_[0]{tls}{hostname_match}, JSON::PP::false, 'NUL in CN: never matches the name')
	  & is($_[0]{tls}{verified}, JSON::PP::false, 'NUL in CN: not verified');
});
case('TLS empty subject', 'empty.tls.test', 'ok', {}, sub {
	is_deeply($_[0]{tls}{leaf}{subject}, {}, 'empty subject: no parts')
	  & is($_[0]{tls}{chain}[0]{subject}, '', 'empty subject: empty RFC 2253 name')
	  & is($_[0]{tls}{verified}, JSON::PP::true, 'empty subject with a critical SAN: verified');
});
case('TLS negative serial', 'negserial.tls.test', 'ok', {}, sub {
	is($_[0]{tls}{leaf}{serial}, '-2A', 'negative serial: recorded');
});
case('TLS huge serial (40 bytes)', 'hugeserial.tls.test', 'ok', {}, sub {
	is($_[0]{tls}{leaf}{serial}, '7F' x 40, 'huge serial: recorded whole');
});
case('TLS dates far in the past', 'past.tls.test', 'ok', {}, sub {
	is($_[0]{tls}{leaf}{not_after}, '1960-01-01T00:00:00Z', 'past: not_after')
	  & is($_[0]{tls}{verify_code}, 10, 'past: expired');
});
case('TLS dates far in the future', 'future.tls.test', 'ok', {}, sub {
	is($_[0]{tls}{leaf}{not_after}, '9999-12-31T23:59:59Z', 'future: not_after')
	  & is($_[0]{tls}{verify_code}, 9, 'future: not yet valid');
});
case('TLS unknown critical extension', 'critext.tls.test', 'ok', {}, sub {
	is($_[0]{tls}{verify_code}, 34, 'critical extension: unhandled critical extension (34)');
});

note "fault cases: $tried tried, $passed passed";
is($passed, $tried, "fault matrix: $passed of $tried cases passed");
$node->stop;
$env->stop;
note sprintf 'total %.1f s', time - $t0;
done_testing;
