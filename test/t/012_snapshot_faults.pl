# Failed measurements are snapshots too, with a status naming the phase that
# failed: TCP refused, a server that accepts and stalls, bytes that are not
# TLS, plain HTTP, a close or a reset during the handshake.  And the address
# guard end to end: a name that resolves to loopback, or to an IPv4-mapped
# loopback address, is blocked without a single packet sent to it, and so is
# a port that is not allowed.
use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Socket qw(SOL_SOCKET SO_REUSEADDR);
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node);

my $t0   = time;
my $env  = AppGuard::TestEnv->new;
my $net  = $env->net;
my $port = $env->tls_port;
my $json = JSON::PP->new->canonical;
my $SLOW = AppGuard::TestEnv::slowdown();    # 10 under valgrind, else 1

# ---------------------------------------------------------------- servers
$env->cert('ok.example.test', key => 'ec256');
my %addr = (
	'ok.example.test'      => $env->tls_host('ok.example.test'),
	'refused.example.test' => $env->fault_server('refuse'),
	'stall.example.test'   => $env->fault_server('stall'),
	'garbage.example.test' => $env->fault_server('garbage', size => 200),
	'http.example.test'    => $env->fault_server('http', name => 'http.example.test'),
	'hello.example.test'   => $env->fault_server('close_after_hello'),
	'reset.example.test'   => $env->fault_server('reset'),
	'slow.example.test'    => $env->fault_server('slow'),
	# a TLS handshake with ok.example.test through a 300 ms latency proxy
	'delayed.example.test' => undef,
	# the test fills this listener's accept queue: SYNs go unanswered
	'synq.example.test'    => $env->fault_server('refuse'),
	# nothing of the env listens here: the test's own listener does, to see
	# whether anything connects
	'guarded.example.test' => $env->fault_server('refuse'),
);
my $guarded = $addr{'guarded.example.test'};
$addr{'delayed.example.test'} =
  $env->fault_server('delay', delay => 300, upstream => $addr{'ok.example.test'});
$env->tls_host('delayed.example.test', addr => $addr{'ok.example.test'}, cert => 'ok.example.test');
$env->zone(
	'example.test',
	[
		(map { "$_. A $addr{$_}" } sort keys %addr),
		"mapped AAAA ::ffff:$guarded",
		"both A $guarded",
		"both AAAA ::ffff:$guarded",
	]);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- cluster
my $node = start_node('snapshot_faults', $env);

sub probe
{
	my ($host, %o) = @_;
	return AppGuard::TestNode::probe($node, $host, port => $port, %o);
}

sub check_failed
{
	my ($f, $status, $error, $what) = @_;
	is($f->{status}, $status, "$what: status $status");
	like($f->{error} // '', $error, "$what: error '" . ($f->{error} // '') . "'");
	is($f->{dns}{rcode}, 'NOERROR', "$what: DNS was fine");
}

# After a TLS failure the document says where it connected, nothing more.
sub check_connected_only
{
	my ($f, $host, $what) = @_;
	is_deeply($f->{tls}, { address => $addr{$host}, sni => $host },
		"$what: tls holds only address and sni");
}

# ---------------------------------------------------------------- sanity
{
	my $f = probe('ok.example.test');
	is($f->{status}, 'ok', 'a healthy host next to the faults: ok');
	is($f->{tls}{verified}, JSON::PP::true, 'healthy host: verified');
}

# ---------------------------------------------------------------- connect
{
	# a connect deadline far from what a refusal takes, so that waiting it
	# out cannot pass for "at once"
	my ($f, $wall) = probe('refused.example.test',
		set => { connect_timeout_ms => 4000 * $SLOW, timeout_ms => 5000 * $SLOW });
	check_failed($f, 'connect_failed', qr/^could not connect to \Q$addr{'refused.example.test'}\E port $port: Connection refused$/,
		'TCP refused');
	is($f->{tls}, undef, 'TCP refused: tls null');
	is_deeply([ sort keys %$f ],
		[qw(dns elapsed_ms error host port schema status taken_at tls tls_addresses tls_addresses_skipped)],
		'TCP refused: every top-level key present');
	is_deeply($f->{tls_addresses}, [ { address => $addr{'refused.example.test'}, status => 'connect_failed',
				error => $f->{error} } ], 'TCP refused: the address listed with its failure');
	is_deeply([ sort keys %{ $f->{dns} } ],
		[qw(a aaaa ad caa caa_domain cname cname_cross_domain cname_target_domain ns ownership_ids queries rcode registrable_domain txt)],
		'TCP refused: every dns key present');
	is_deeply($f->{dns}{a}, [ $addr{'refused.example.test'} ], 'TCP refused: dns.a kept');
	cmp_ok($f->{elapsed_ms}, '<', 4000 * $SLOW,
		"TCP refused: returned at the refusal ($f->{elapsed_ms} ms), not at the connect deadline");
}

# A full accept queue makes Linux drop new SYNs: the connect never
# completes, and the probe gives up at appguard.connect_timeout_ms.  A
# backlog of 1 queues two connections (IO::Socket takes Listen => 0 for 5).
{
	my $synq = IO::Socket::INET->new(
		LocalAddr => $addr{'synq.example.test'},
		LocalPort => $port,
		Listen    => 1,
		ReuseAddr => 1) or die "listen: $!";
	my @fill;
	for (1 .. 4)
	{
		push @fill, IO::Socket::INET->new(
			PeerAddr => $addr{'synq.example.test'},
			PeerPort => $port,
			Blocking => 0);
	}
	sleep 0.2;
	my $f = probe('synq.example.test', set => { connect_timeout_ms => 700 });
	check_failed($f, 'connect_failed',
		qr/^could not connect to \Q$addr{'synq.example.test'}\E port $port within 700 ms$/,
		'SYN unanswered');
	is($f->{tls}, undef, 'SYN unanswered: tls null');
	cmp_ok($f->{elapsed_ms}, '>=', 700, "SYN unanswered: elapsed_ms $f->{elapsed_ms} >= connect_timeout_ms");
	cmp_ok($f->{elapsed_ms}, '<', 2500 * $SLOW, 'SYN unanswered: well before the probe deadline (5000 ms)');
	close $_ for grep { defined } @fill;
	close $synq;
}

# ---------------------------------------------------------------- stall
# The server accepts and never answers: the probe ends at appguard.timeout_ms.
{
	my ($f, $wall) = probe('stall.example.test', set => { timeout_ms => 1500 });
	check_failed($f, 'timeout', qr/^no answer within 1500 ms while in the TLS handshake$/,
		'accept-then-stall');
	check_connected_only($f, 'stall.example.test', 'accept-then-stall');
	cmp_ok($f->{elapsed_ms}, '>=', 1500, "accept-then-stall: elapsed_ms $f->{elapsed_ms} >= 1500");
	cmp_ok($f->{elapsed_ms}, '<', 1500 + 1000 * $SLOW, 'accept-then-stall: elapsed_ms not much more than the deadline');
	cmp_ok($wall, '>=', 1.5, sprintf('accept-then-stall: the call took %.2f s', $wall));
	cmp_ok($wall, '<', 1.5 + 2 * $SLOW, 'accept-then-stall: and returned soon after the deadline');
}

# A server that trickles one byte a second never finishes a handshake
{
	my $f = probe('slow.example.test', set => { timeout_ms => 1000 });
	check_failed($f, 'timeout', qr/^no answer within 1000 ms while in the TLS handshake$/,
		'one byte a second');
	check_connected_only($f, 'slow.example.test', 'one byte a second');
}

# Slow but within the deadline is not a fault
{
	my $f = probe('delayed.example.test');
	is($f->{status}, 'ok', 'behind a 300 ms latency proxy: ok');
	is($f->{tls}{address}, $addr{'delayed.example.test'}, 'latency proxy: the proxy address');
	is($f->{tls}{leaf}{subject}{CN}, 'ok.example.test', 'latency proxy: the real server answered');
	cmp_ok($f->{elapsed_ms}, '>=', 300, "latency proxy: elapsed_ms $f->{elapsed_ms} >= 300");
}

# ---------------------------------------------------------------- not TLS
{
	my $f = probe('garbage.example.test');
	# OpenSSL's own words (Debian 12, OpenSSL 3.0)
	check_failed($f, 'tls_failed', qr/^TLS handshake failed: wrong version number$/, 'non-TLS bytes');
	check_connected_only($f, 'garbage.example.test', 'non-TLS bytes');

	$f = probe('http.example.test');
	check_failed($f, 'tls_failed', qr/^TLS handshake failed: wrong version number$/, 'plain HTTP on the port');
	check_connected_only($f, 'http.example.test', 'plain HTTP');

	$f = probe('hello.example.test');
	check_failed($f, 'tls_failed', qr/^TLS handshake failed: unexpected eof while reading$/,
		'close after the ClientHello');
	check_connected_only($f, 'hello.example.test', 'close after the ClientHello');

	$f = probe('reset.example.test');
	check_failed($f, 'tls_failed', qr/^TLS handshake failed: Connection reset by peer$/, 'reset');
	check_connected_only($f, 'reset.example.test', 'reset');
}

# ---------------------------------------------------------------- address guard
# The test listens on the guarded address itself.  The kernel completes
# any TCP handshake to a listening socket and queues it, so a connection
# attempt leaves an entry in the accept queue whether or not we accept:
# an empty queue after the probe means nothing reached the address.
my $listener = IO::Socket::INET->new(
	LocalAddr => $guarded,
	LocalPort => $port,
	Listen    => 16,
	ReuseAddr => 1) or die "listen on $guarded:$port: $!";

sub connections_seen
{
	my $n = 0;
	while (IO::Select->new($listener)->can_read(0.2))
	{
		my $c = $listener->accept or last;
		close $c;
		$n++;
	}
	return $n;
}

my %OFF = (allow_private_addresses => 'off');
{
	my $f = probe('guarded.example.test', set => \%OFF);
	is($f->{status}, 'blocked', 'loopback A, private addresses off: blocked');
	is($f->{error},
		"refused by the address policy: $guarded is a loopback address (appguard.allow_private_addresses is off, and appguard.allowed_networks does not list it)",
		'loopback A: error names the address and its class');
	is($f->{tls}, undef, 'loopback A: tls null');
	is_deeply($f->{dns}{a}, [$guarded], 'loopback A: the address is recorded');
	is(connections_seen(), 0, 'loopback A: no connection reached the address');

	$f = probe('mapped.example.test', set => \%OFF);
	is($f->{status}, 'blocked', 'IPv4-mapped loopback AAAA: blocked');
	like($f->{error}, qr/^refused by the address policy: ::ffff:\Q$guarded\E is a loopback address/,
		'IPv4-mapped AAAA: judged by its IPv4 address');
	is_deeply($f->{dns}{aaaa}, ["::ffff:$guarded"], 'IPv4-mapped AAAA: recorded');
	is($f->{tls}, undef, 'IPv4-mapped AAAA: tls null');
	is(connections_seen(), 0, 'IPv4-mapped AAAA: no connection reached the address');

	$f = probe('both.example.test', set => \%OFF);
	is($f->{status}, 'blocked', 'A and mapped AAAA, both loopback: blocked');
	is(connections_seen(), 0, 'A and mapped AAAA: no connection');

	$f = probe('guarded.example.test', set => \%OFF, store => 1);
	is($f->{status}, 'blocked', 'snapshot of a blocked host: blocked');
	is($node->safe_psql('postgres', "SELECT status || ' ' || cardinality(chain) FROM appguard.snapshots WHERE id = $f->{id}"),
		'blocked 0', 'snapshot of a blocked host: stored with status blocked, no chain');
	is(connections_seen(), 0, 'snapshot of a blocked host: no connection');

	# The control: allowed, the same names do reach the listener (which
	# never answers, so the probe times out), so the checks above could fail.
	my %ON = (allow_private_addresses => 'on', timeout_ms => 500);
	$f = probe('guarded.example.test', set => \%ON);
	is($f->{status}, 'timeout', 'loopback allowed: connects, then times out on the silent listener');
	is($f->{tls}{address}, $guarded, 'loopback allowed: connected to the address');
	is(connections_seen(), 1, 'loopback allowed: the listener saw the connection');

	$f = probe('mapped.example.test', set => \%ON);
	is($f->{status}, 'timeout', 'mapped AAAA allowed: connects');
	is($f->{tls}{address}, "::ffff:$guarded", 'mapped AAAA allowed: tls.address is the mapped address');
	is(connections_seen(), 1, 'mapped AAAA allowed: the listener saw the connection');
}

# A port outside appguard.allowed_ports: blocked before anything is sent,
# DNS included.
{
	my $other = IO::Socket::INET->new(
		LocalAddr => $guarded,
		LocalPort => $port + 1,
		Listen    => 16,
		ReuseAddr => 1) or die "listen on $guarded:" . ($port + 1) . ": $!";
	my $f = probe('guarded.example.test', port => $port + 1);
	is($f->{status}, 'blocked', 'port not allowed: blocked');
	is($f->{error}, sprintf("port %d is not in appguard.allowed_ports (%s,%s)", $port + 1, $port, $env->tls6_port),
		'port not allowed: error names the port and the list');
	is($f->{port}, $port + 1, 'port not allowed: the port is recorded');
	is($f->{tls}, undef, 'port not allowed: tls null');
	is_deeply($f->{dns}{queries}, { map { $_ => undef } qw(A AAAA NS TXT CAA) },
		'port not allowed: not even DNS was asked');
	is_deeply($f->{dns}{a}, [], 'port not allowed: no addresses');
	ok(!IO::Select->new($other)->can_read(0.2), 'port not allowed: no connection reached the port');

	$f = probe('ok.example.test', set => { allowed_ports => '' });
	is($f->{status}, 'blocked', 'empty appguard.allowed_ports: blocked');
}

# ---------------------------------------------------------------- stored
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM appguard.snapshots'),
		1, 'appguard_probe stored nothing (the one row is the blocked snapshot)');
	my %status;
	for my $host (qw(refused.example.test garbage.example.test stall.example.test))
	{
		my $f = probe($host, store => 1, set => { timeout_ms => 1000 });
		my $id = delete $f->{id};
		my $row = $node->safe_psql('postgres',
			"SELECT json_build_object('facts', facts, 'status', status, 'n', cardinality(chain)) "
			  . "FROM appguard.snapshots WHERE id = $id");
		my $stored = $json->decode($row);
		is_deeply($stored->{facts}, $f, "snapshot $host: stored facts = returned minus id");
		is($stored->{status}, $f->{status}, "snapshot $host: status column $f->{status}");
		is($stored->{n}, 0, "snapshot $host: no chain");
		$status{$host} = $f->{status};
	}
	is_deeply(\%status,
		{ 'refused.example.test' => 'connect_failed', 'garbage.example.test' => 'tls_failed',
		  'stall.example.test' => 'timeout' },
		'failed measurements stored with the failing phase');
}

$listener->close;
$node->stop;
$env->stop;
note sprintf 'total %.1f s', time - $t0;
done_testing;
