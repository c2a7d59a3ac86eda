# Leak check: many probes in one backend, each to a host chosen at random
# among healthy and faulty ones (TLS ok, bad certificates, refused, reset,
# garbage, plain HTTP, close after the ClientHello, NXDOMAIN, SERVFAIL,
# REFUSED, a malformed DNS answer, and a host at all those addresses whose
# probe measures every one of them after the first).  The backend's resident memory and its
# open descriptors are read from /proc before (after a warm-up) and after.
# Nothing may keep growing: descriptors return to where they were, and RSS
# grows by less than 8 MB (what a leak of a few hundred bytes a probe
# would already exceed at 10,000 probes).
#   AG_LEAK_PROBES (default 10000)
use strict;
use warnings;

use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;

my $probes = $ENV{AG_LEAK_PROBES} // 10000;
my $t0     = time;
my $env    = AppGuard::TestEnv->new;
my $port   = $env->tls_port;

$env->certs(
	'ok.leak.test'      => { key => 'ec256', o => 'Leak Test Inc', policies => ['OV'] },
	'expired.leak.test' => { key => 'ec256', not_before => -30, not_after => -1 },
	'self.leak.test'    => { key => 'ec256', issuer => 'self' },
	'staple.leak.test'  => { key => 'ec256', ocsp => 'good' });
my %addr = (
	'ok.leak.test'      => $env->tls_host('ok.leak.test'),
	'expired.leak.test' => $env->tls_host('expired.leak.test'),
	'self.leak.test'    => $env->tls_host('self.leak.test'),
	'staple.leak.test'  => $env->tls_host('staple.leak.test', ocsp_staple => 1),
	'refused.leak.test' => $env->fault_server('refuse'),
	'reset.leak.test'   => $env->fault_server('reset'),
	'garbage.leak.test' => $env->fault_server('garbage', size => 100),
	'http.leak.test'    => $env->fault_server('http', name => 'http.leak.test'),
	'hello.leak.test'   => $env->fault_server('close_after_hello'));
$env->zone('leak.test', [ (map { "$_. A $addr{$_}" } sort keys %addr),
		(map { "multi.leak.test. A $addr{$_}" } sort keys %addr) ]);
$env->servfail_zone('broken.test');
$env->start;
my $fault_dns = $env->dns_fault_server(target => $addr{'ok.leak.test'});
note sprintf 'environment up in %.1f s', time - $t0;

my $node = PostgreSQL::Test::Cluster->new('leak_check');
$node->init;
$node->append_conf('postgresql.conf', $env->postgresql_conf);
$node->append_conf('postgresql.conf', "appguard.timeout_ms = 2000\nappguard.dns_timeout_ms = 300\n"
	  . "appguard.max_addresses_per_family = 16\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION appguard');

# Hosts with the DNS server that serves them; the scripted server gives a
# malformed answer (garbage) and a truncated one (TCP fallback).
my @targets = ((map { [ $_, $env->dns_servers_guc ] } sort keys %addr),
	[ 'multi.leak.test', $env->dns_servers_guc ],
	[ 'gone.leak.test', $env->dns_servers_guc ],
	[ 'www.broken.test', $env->dns_servers_guc ],
	[ 'www.nozone.example', $env->dns_servers_guc ],
	[ 'www.garbage.test', $fault_dns ],
	[ 'www.trunc.test', $fault_dns ]);
my $hosts   = join ',', map { "'$_->[0]'" } @targets;
my $servers = join ',', map { "'$_->[1]'" } @targets;

my $psql = $node->background_psql('postgres', on_error_stop => 1);
my $pid = $psql->query_safe('SELECT pg_backend_pid()');
$pid =~ s/\s+//g;
$psql->query_safe(<<"EOF");
CREATE FUNCTION pg_temp.probe_random(n integer) RETURNS jsonb LANGUAGE plpgsql AS \$\$
DECLARE
	hosts text[] := ARRAY[$hosts];
	servers text[] := ARRAY[$servers];
	i integer;
	k integer;
	f jsonb;
	statuses jsonb := '{}';
BEGIN
	FOR i IN 1 .. n LOOP
		k := 1 + floor(random() * pg_catalog.cardinality(hosts))::integer;
		PERFORM pg_catalog.set_config('appguard.dns_servers', servers[k], true);
		f := appguard_probe(hosts[k], $port);
		statuses := jsonb_set(statuses, ARRAY[f ->> 'status'],
							  to_jsonb(coalesce((statuses ->> (f ->> 'status'))::integer, 0) + 1));
	END LOOP;
	RETURN statuses;
END
\$\$;
EOF

sub usage
{
	open my $st, '<', "/proc/$pid/status" or die "/proc/$pid/status: $!";
	my ($rss) = map { /^VmRSS:\s+(\d+) kB/ ? $1 : () } <$st>;
	opendir my $d, "/proc/$pid/fd" or die "/proc/$pid/fd: $!";
	my $fds = grep { /^\d+$/ } readdir $d;
	return ($rss, $fds);
}

my $warm = $psql->query_safe('BEGIN; SELECT pg_temp.probe_random(500); COMMIT;');
my ($rss0, $fd0) = usage();
my $start = time;
my $out = $psql->query_safe("BEGIN; SELECT pg_temp.probe_random($probes); COMMIT;");
my $secs = time - $start;
my ($rss1, $fd1) = usage();
my ($statuses) = $out =~ /(\{.*\})/;
my $count = JSON::PP->new->decode($statuses);
my $total = 0;
$total += $_ for values %$count;

note sprintf 'leak check: %d probes in %.1f s; statuses %s', $total, $secs, $statuses;
note sprintf 'leak check: backend RSS %d kB -> %d kB (%+d kB), descriptors %d -> %d',
  $rss0, $rss1, $rss1 - $rss0, $fd0, $fd1;
is($total, $probes, "$probes probes ran in one backend");
cmp_ok(scalar keys %$count, '>=', 4, 'the probes met several outcomes: ' . join(', ', sort keys %$count));
ok($count->{ok} && $count->{tls_failed} && $count->{connect_failed} && $count->{dns_failed},
	'ok, tls_failed, connect_failed and dns_failed all occurred');
is($fd1, $fd0, "open descriptors of the backend unchanged ($fd0 -> $fd1)");
cmp_ok($rss1 - $rss0, '<', 8192, sprintf('backend RSS grew by %d kB (< 8 MB) over %d probes', $rss1 - $rss0, $probes));
$psql->quit;
$node->stop;
$env->stop;
note sprintf 'total %.1f s', time - $t0;
done_testing;
