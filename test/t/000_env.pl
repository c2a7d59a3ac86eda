# Brings up the whole test environment (AppGuard::TestEnv) and checks every
# kind of host with real clients: openssl s_client for TLS, kdig for DNS,
# plain sockets for the scripted faults.  Then stops it and checks that no
# process is left, including after the owning process is killed.
use strict;
use warnings;

use Errno qw(ECONNREFUSED ECONNRESET);
use File::Temp ();
use IO::Select;
use IO::Socket::INET;
use IPC::Run ();
use Test::More;
use Time::HiRes qw(sleep time);

use AppGuard::TestEnv;

my $t0  = time;
my $env = AppGuard::TestEnv->new;
my $ca  = $env->ca_file;
my $net = $env->net;

# ---------------------------------------------------------------- TLS hosts
# name => [cert options, host options, expected verify code, output checks]
my @tls_cases = (
	[ 'dv.example.test', [ policies => ['DV'] ], [], 0, [qr/Policy: 2\.23\.140\.1\.2\.1\b/] ],
	[
		'ov.example.test',
		[
			o => 'Example Health, Inc.', ou => 'Patient Apps', c => 'US',
			st => 'Wisconsin', l => 'Verona', policies => ['OV']
		],
		[], 0,
		[ qr/^subject=C = US, ST = Wisconsin, L = Verona, O = "Example Health, Inc\.", OU = Patient Apps, CN = ov\.example\.test$/m,
		  qr/Policy: 2\.23\.140\.1\.2\.2\b/ ]
	],
	[ 'ev.example.test', [ o => 'Example Health', c => 'US', policies => ['EV'] ], [], 0, [qr/Policy: 2\.23\.140\.1\.1\b/] ],
	[ 'app.wild.example.test', [ cn => '*.wild.example.test', san => ['*.wild.example.test'] ], [], 0, [qr/DNS:\*\.wild\.example\.test/] ],
	[ 'sanonly.example.test', [ cn => undef, san => ['sanonly.example.test'] ], [], 0, [ qr/^subject=\s*$/m, qr/Subject Alternative Name: critical/ ] ],
	[ 'expired.example.test', [ not_before => -100, not_after => -10 ], [], 10, [] ],
	[ 'notyet.example.test', [ not_before => 10, not_after => 100 ], [], 9, [] ],
	[ 'wrong.example.test', [ san => ['other.example.test'] ], [], 62, [] ],
	[ 'self.example.test', [ issuer => 'self' ], [], 18, [] ],
	[ 'untrusted.example.test', [ issuer => 'untrusted' ], [], 20, [ chain(2), qr/^issuer=.*Untrusted Issuing CA$/m ] ],
	[ 'untrustedroot.example.test', [ issuer => 'untrusted' ], [ chain => 'with_root' ], 19, [ chain(3) ] ],
	[ 'leafonly.example.test', [], [ chain => 'leaf_only' ], 21, [ chain(1) ] ],
	[ 'reversed.example.test', [], [ chain => 'reversed' ], 0, [ chain(3), qr/^ 1 s:.*Root CA$(?s:.*)^ 2 s:.*Issuing CA 1$/m ] ],
	[ 'withroot.example.test', [], [ chain => 'with_root' ], 0, [ chain(3), qr/^ 2 s:.*Root CA$/m ] ],
	[ 'full.example.test', [], [], 0, [ chain(2), qr/OCSP response: no response sent/ ] ],
	[ 'revoked.example.test', [ revoked => 1 ], [ ocsp_staple => 1 ], 0, [qr/Cert Status: revoked/] ],
	[ 'good.example.test', [ ocsp => 'good' ], [ ocsp_staple => 1 ], 0, [qr/Cert Status: good/] ],
	[ 'unknown.example.test', [ ocsp => 'unknown' ], [ ocsp_staple => 1 ], 0, [qr/Cert Status: unknown/] ],
	[ 'weak.example.test', [ key => 'rsa1024' ], [], 66, [qr/Server public key is 1024 bit/] ],
	[ 'ecdsa.example.test', [ key => 'ec256' ], [], 0, [ qr/Server public key is 256 bit/, qr/id-ecPublicKey/ ] ],
	[ 'inter2.example.test', [ issuer => 'intermediate2' ], [], 0, [qr/^issuer=.*Issuing CA 2$/m] ],
	[ 'byroot.example.test', [ issuer => 'root' ], [], 0, [ chain(1), qr/^issuer=.*Root CA$/m ] ],
	[ 'v6.example.test', [], [ addr => '::1' ], 0, [] ],);

# A check that the server sent N certificates.
sub chain
{
	my ($n) = @_;
	return sub { my $sent = () = $_[0] =~ /^ \d+ s:/mg; is($sent, $n, "$_[1]: $n certs sent") };
}

$env->certs(map { $_->[0] => { @{ $_->[1] } } } @tls_cases);
my %addr;
for my $case (@tls_cases)
{
	my ($name, undef, $host_opts) = @$case;
	$addr{$name} = $env->tls_host($name, cert => $name, @$host_opts);
}
$addr{'tls11.example.test'} = $env->tls_host('tls11.example.test', protocols => 'TLSv1.1');
$addr{'plain.example.test'} = $env->tls_host('plain.example.test', plain_http => 1);

# ---------------------------------------------------------------- DNS zones
$env->zone(
	'example.test',
	[
		(map { "$_. A $addr{$_}" } grep { $addr{$_} =~ /^127/ } sort keys %addr),
		'v6 AAAA ::1',
		"multi A $net.200.3",
		"multi A $net.200.1",
		"multi A $net.200.2",
		'alias CNAME alias2',
		'alias2 CNAME alias3',
		'alias3 CNAME dv',
		'@ CAA 0 issue "ca.test"',
		'@ TXT "appguard-client-id=app1"',
	]);
$env->zone('other.test', [ '@ TXT "v=spf1 -all"', '@ NS ns1.provider.test.', '@ NS ns2.provider.test.', "www A $net.200.9" ]);
$env->servfail_zone('broken.test');

$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- TLS checks

sub s_client
{
	my ($addr, $name, @extra) = @_;
	my $hostport = $addr =~ /:/ ? "[$addr]:" . $env->tls6_port : "$addr:" . $env->tls_port;
	my $out = '';
	IPC::Run::run(
		[ 'openssl', 's_client', '-connect', $hostport, '-servername', $name,
		  '-CAfile', $ca, '-verify_hostname', $name, '-status', '-showcerts', @extra ],
		'<', \'', '>&', \$out, IPC::Run::timeout(10));
	# the leaf in text form, for policies, SAN and key type
	my ($leaf) = $out =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n)/s;
	if ($leaf)
	{
		IPC::Run::run([ 'openssl', 'x509', '-noout', '-text' ], '<', \$leaf, '>>', \$out);
	}
	return $out;
}

sub verify_code
{
	my ($out) = @_;
	return $out =~ /Verify return code: (\d+)/ ? $1 : "none\n$out";
}

for my $case (@tls_cases)
{
	my ($name, undef, undef, $code, $checks) = @$case;
	my $out = s_client($addr{$name}, $name);
	is(verify_code($out), $code, "$name: verify code $code");
	ref $_ eq 'CODE' ? $_->($out, $name) : like($out, $_, "$name: $_") for @$checks;
}

{
	my $out = s_client($addr{'weak.example.test'}, 'weak.example.test', '-cipher', 'DEFAULT:@SECLEVEL=0');
	is(verify_code($out), 0, 'weak: a permissive client accepts RSA-1024');

	$out = s_client($addr{'tls11.example.test'}, 'tls11.example.test', '-tls1_1', '-cipher', 'DEFAULT:@SECLEVEL=0');
	like($out, qr/Protocol\s*: TLSv1\.1$/m, 'tls11: TLS 1.1 served');

	my $spki = sub {
		my $o = '';
		IPC::Run::run([ 'openssl', 'x509', '-in', $_[0], '-noout', '-pubkey' ], '>', \$o);
		return $o;
	};
	is($spki->($env->cert('again', key_of => 'ov.example.test')->{cert}),
		$spki->($env->dir . '/pki/certs/ov.example.test.crt'), 'key_of keeps the SPKI');
}

is(http_get($addr{'plain.example.test'}), 'plain.example.test', 'plain_http: HTTP where TLS is expected');
like(s_client($addr{'plain.example.test'}, 'plain.example.test'), qr/no peer certificate available/, 'plain_http: no TLS');

# A renewal through the other intermediate, a late revocation, a new host,
# a second name on an address: all live as soon as reload() returns.
{
	$env->cert('dv-renewed', san => ['dv.example.test'], issuer => 'intermediate2');
	$env->tls_host('dv.example.test', addr => $addr{'dv.example.test'}, cert => 'dv-renewed');
	$env->revoke('good.example.test');
	my $late = $env->tls_host('late.example.test');
	$env->tls_host('sni.example.test', addr => $addr{'full.example.test'});
	$env->reload;
	like(s_client($addr{'dv.example.test'}, 'dv.example.test'), qr/^issuer=.*Issuing CA 2$/m, 'reload: renewed cert served');
	like(s_client($addr{'good.example.test'}, 'good.example.test'), qr/Cert Status: revoked/, 'reload: revocation stapled');
	is(verify_code(s_client($late, 'late.example.test')), 0, 'reload: new host served');
	is(verify_code(s_client($addr{'full.example.test'}, 'sni.example.test')), 0, 'reload: second name by SNI');
	is(verify_code(s_client($addr{'full.example.test'}, 'full.example.test')), 0, 'reload: first name still default');
}

# ---------------------------------------------------------------- DNS checks

sub kdig
{
	my ($server, $name, $type, @opts) = @_;
	my ($addr, $port) = $server =~ /^(.*):(\d+)$/;
	my $out = '';
	IPC::Run::run([ 'kdig', "\@$addr", '-p', $port, '+timeout=1', '+retry=0', @opts, $type, $name ],
		'<', \'', '>&', \$out, IPC::Run::timeout(10));
	my ($rcode) = $out =~ /status: (\w+)/;
	my @answer = map { (split /\s+/, s/\s+$//r, 5)[4] } grep { /^\S+\.\s+\d+\s+IN\s+\Q$type\E\s/ } split /\n/, $out;
	return ($rcode // 'TIMEOUT', [ sort @answer ], $out);
}

my $dns = $env->dns_servers_guc;
my @dns_cases = (
	[ 'dv.example.test', 'A', 'NOERROR', [ $addr{'dv.example.test'} ] ],
	[ 'multi.example.test', 'A', 'NOERROR', [ map { "$net.200.$_" } 1 .. 3 ] ],
	[ 'v6.example.test', 'AAAA', 'NOERROR', ['::1'] ],
	[ 'dv.example.test', 'AAAA', 'NOERROR', [] ],
	[ 'alias.example.test', 'CNAME', 'NOERROR', ['alias2.example.test.'] ],
	[ 'example.test', 'CAA', 'NOERROR', ['0 issue "ca.test"'] ],
	[ 'example.test', 'TXT', 'NOERROR', ['"appguard-client-id=app1"'] ],
	[ 'other.test', 'TXT', 'NOERROR', ['"v=spf1 -all"'] ],
	[ 'other.test', 'NS', 'NOERROR', [ 'ns1.provider.test.', 'ns2.provider.test.' ] ],
	[ 'example.test', 'NS', 'NOERROR', ['ns.agenv.test.'] ],
	[ 'missing.example.test', 'A', 'NXDOMAIN', [] ],
	[ 'www.broken.test', 'A', 'SERVFAIL', [] ],
	[ 'www.nozone.test', 'A', 'REFUSED', [] ],);
for my $case (@dns_cases)
{
	my ($name, $type, $rcode, $answer) = @$case;
	my ($got_rcode, $got) = kdig($dns, $name, $type);
	is($got_rcode, $rcode, "dns $name $type: $rcode");
	is_deeply($got, $answer, "dns $name $type: answer");
}
{
	my (undef, undef, $out) = kdig($dns, 'alias.example.test', 'A');
	like($out, qr/alias\.example\.test\.\s.*CNAME\s+alias2.*\n.*alias2\.example\.test\.\s.*CNAME\s+alias3.*\n.*alias3\.example\.test\.\s.*CNAME\s+dv.*\n.*dv\.example\.test\.\s.*A\s+127/,
		'dns: CNAME chain followed to the A record');
	is((kdig($dns, 'www.nozone.test', 'A', '+tcp'))[0], 'REFUSED', 'dns: TCP answers too');

	my $silent = $env->silent_dns;
	is((kdig($silent, 'dv.example.test', 'A'))[0], 'TIMEOUT', 'silent dns: UDP timeout');
	is((kdig($silent, 'dv.example.test', 'A', '+tcp'))[0], 'TIMEOUT', 'silent dns: TCP timeout');
}

# Updates are served as soon as zone*() returns.
{
	my $serial = $env->zone_update('example.test', [ "dv A $net.200.7", '@ TXT "something else"' ]);
	is_deeply((kdig($dns, 'example.test', 'TXT'))[1], ['"something else"'], 'zone_update: ownership record gone');
	is_deeply((kdig($dns, 'dv.example.test', 'A'))[1], ["$net.200.7"], 'zone_update: new A');
	like((kdig($dns, 'example.test', 'SOA'))[1][0], qr/ $serial 3600 /, "zone_update: serial $serial");

	$env->servfail_zone('other.test');
	is((kdig($dns, 'other.test', 'TXT'))[0], 'SERVFAIL', 'servfail_zone on a loaded zone');
	$env->zone('other.test', ['@ TXT "back"']);
	is_deeply((kdig($dns, 'other.test', 'TXT'))[1], ['"back"'], 'zone back after SERVFAIL');

	$env->zone('late.test', ["www A $net.200.8"]);
	is_deeply((kdig($dns, 'www.late.test', 'A'))[1], ["$net.200.8"], 'zone added while running');
}

# ---------------------------------------------------------------- faults

sub tcp_connect
{
	my ($addr) = @_;
	return IO::Socket::INET->new(PeerAddr => $addr, PeerPort => $env->tls_port, Timeout => 2);
}

sub read_some
{
	my ($sock, $wait) = @_;
	return undef unless IO::Select->new($sock)->can_read($wait);    # nothing came
	my $n = sysread($sock, my $buf, 4096);
	return defined $n ? $buf : "ERROR $!";
}

# a TLS record header and a few bytes, enough to look like a ClientHello
my $hello = "\x16\x03\x01\x00\x04\x01\x00\x00\x00";

{
	my $addr = $env->fault_server('refuse');
	ok(!tcp_connect($addr) && $! == ECONNREFUSED, 'refuse: connection refused');

	my $sock = tcp_connect($env->fault_server('stall'));
	syswrite $sock, $hello;
	is(read_some($sock, 1), undef, 'stall: accepts, never answers');

	$sock = tcp_connect($env->fault_server('garbage', size => 100));
	my $data = read_some($sock, 2);
	ok(length($data) == 100 && $data =~ /^\x00/, 'garbage: 100 non-TLS bytes');
	is(read_some($sock, 2), '', 'garbage: then closes');
	$sock = tcp_connect($env->fault_server('garbage', close => 0));
	read_some($sock, 2);
	is(read_some($sock, 1), undef, 'garbage: close => 0 keeps it open');

	my $out = s_client($env->fault_server('garbage'), 'garbage.example.test');
	like($out, qr/wrong version number.*no peer certificate available/s, 'garbage: s_client fails');

	$sock = tcp_connect($env->fault_server('close_after_hello'));
	syswrite $sock, $hello;
	is(read_some($sock, 2), '', 'close_after_hello: EOF after the hello');

	$sock = tcp_connect($env->fault_server('reset'));
	syswrite $sock, $hello;
	my $read = read_some($sock, 2);
	my $errno = $! + 0;
	like($read // '', qr/^ERROR /, 'reset: read fails');
	ok($errno == ECONNRESET, "reset: ECONNRESET (errno $errno)");

	$sock = tcp_connect($env->fault_server('slow'));
	my $start = time;
	my $got = '';
	$got .= read_some($sock, $start + 1.5 - time) // '' while time - $start < 1.5;
	ok(length($got) >= 1 && length($got) <= 2 && $got =~ /^\x16/, 'slow: about one byte per second (' . length($got) . ' in 1.5 s)');

	my $trickle = $env->fault_server('slow', rate => 10000, upstream => $addr{'full.example.test'});
	$start = time;
	is(verify_code(s_client($trickle, 'full.example.test')), 0, 'slow: a real TLS handshake, trickled');
	cmp_ok(time - $start, '>=', 0.2, 'slow: 3 kB at 10 kB/s take 0.3 s');

	is(http_get($env->fault_server('http')), '_', 'http: nginx plain HTTP');
}

{
	my $target = $addr{'full.example.test'};
	my $proxy = $env->fault_server('delay', delay => 200, upstream => $target);
	my $start = time;
	my $out = s_client($proxy, 'full.example.test');
	my $took = time - $start;
	is(verify_code($out), 0, 'delay: TLS through the latency proxy');
	# nothing reaches the server before the delay: a lower bound under any load
	cmp_ok($took, '>=', 0.2, sprintf('delay: handshake took %.0f ms', 1000 * $took));

	my @before = $env->processes;
	my @proxies = $env->delay_proxies(200, [ ($target) x 100 ]);
	is(scalar($env->processes), @before + 1, 'delay_proxies: 100 proxies, one process');
	is(verify_code(s_client($proxies[-1], 'full.example.test')), 0, 'delay_proxies: last one relays');
}

like($env->postgresql_conf, qr/^shared_preload_libraries = 'appguard'\nappguard\.dns_servers = '\Q$dns\E'\nappguard\.ca_file = '\Q$ca\E'\nappguard\.allowed_ports = '\d+,\d+'\nappguard\.allow_private_addresses = on\n$/,
	'postgresql_conf');
unlike($env->postgresql_conf(preload => 0), qr/shared_preload_libraries/, 'postgresql_conf(preload => 0)');

# ---------------------------------------------------------------- teardown

ok(scalar($env->processes) >= 4, 'servers running: ' . scalar($env->processes));
$env->stop;
is_deeply([ $env->processes ], [], 'stop: no process left');
ok(!tcp_connect($addr{'full.example.test'}), 'stop: nginx gone');

# An owner killed with SIGKILL runs no cleanup: the watchdog stops its servers.
{
	my $tmp = File::Temp::tempdir('agenv_orphan_XXXX', TMPDIR => 1, CLEANUP => 1);
	my ($in, $out) = ('', '');
	my $child = IPC::Run::start(
		[ $^X, (map { "-I$_" } @INC), '-MAppGuard::TestEnv', '-e',
		  '$| = 1; my $e = AppGuard::TestEnv->new(dir => shift); $e->silent_dns; $e->start; print "up\n"; sleep 60',
		  "$tmp/env" ],
		'<', \$in, '>', \$out, '2>&1', IPC::Run::timeout(30));
	$child->pump until $out =~ /up\n/ || !$child->pumpable;
	is($out, "up\n", 'orphan env up');
	my @pids = map { AppGuard::TestEnv::_read_pid($_) } glob "$tmp/env/run/*.pid";
	$child->signal('KILL');
	$child->finish;
	my %session = map { $_ => 1 } @pids;
	my $left = sub { grep { $session{ $_->{sid} } } AppGuard::TestEnv::_live_processes() };
	my $deadline = time + 10;
	sleep 0.1 while $left->() && time < $deadline;
	is_deeply([ $left->() ], [], 'watchdog stopped the servers of a killed owner (' . scalar(@pids) . ' sessions)');
}

note sprintf 'total %.1f s', time - $t0;
done_testing;

sub http_get
{
	my ($addr) = @_;
	my $sock = tcp_connect($addr) or return "connect: $!";
	print $sock "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
	my $reply = do { local $/; <$sock> } // '';
	return $reply =~ m{^HTTP/1\.1 200 .*\r\n\r\n(.*)\n$}s ? $1 : $reply;
}
