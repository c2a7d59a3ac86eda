# What a host's further addresses cost: backend CPU a host of
# appguard_snapshot_many over hosts of one address and over hosts of four
# (each a connection and a TLS handshake to its own nginx address), and
# the difference per further address, next to openssl s_time -new's CPU a
# handshake against the same server and certificate, in the same run.
# Not a test: it asserts nothing but that the measurements ran; read the
# notes (prove -v).  Run it as a TAP file, e.g.
#   /work/agtest.sh TREE tap test/bench/addresses.pl     (session tool), or
#   make prove_installcheck PROVE_FLAGS='-I ./test/perl -v' PROVE_TESTS=test/bench/addresses.pl
#   AG_ADDR_HOSTS (default 200), AG_ADDR_ROUNDS (default 5)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;

my $hosts  = $ENV{AG_ADDR_HOSTS}  // 200;
my $rounds = $ENV{AG_ADDR_ROUNDS} // 5;
my $env    = AppGuard::TestEnv->new;
my $port   = $env->tls_port;

$env->cert('wild', cn => '*.addr.test', san => ['*.addr.test'], o => 'Bench Inc', policies => ['OV']);
my @a = map { $env->tls_host("a$_.addr.test", cert => 'wild') } 1 .. 4;
my @records;
for my $i (1 .. $hosts)
{
	push @records, "one$i A $a[0]";
	push @records, map { "four$i A $_" } @a;
}
$env->zone('addr.test', \@records);
$env->start;

my $node = PostgreSQL::Test::Cluster->new('addr_bench');
$node->init;
$node->append_conf('postgresql.conf', $env->postgresql_conf . "appguard.timeout_ms = 20000\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION appguard');

my $psql = $node->background_psql('postgres', on_error_stop => 1);
my $pid = $psql->query_safe('SELECT pg_backend_pid()');
$pid =~ s/\s+//g;

sub cpu_s
{
	open my $f, '<', "/proc/$pid/schedstat" or die "/proc/$pid/schedstat: $!";
	my ($ns) = split ' ', <$f>;
	return $ns / 1e9;
}

sub many
{
	my ($prefix) = @_;
	my $names = join ',', map { "'$prefix$_.addr.test'" } 1 .. $hosts;
	my $c0 = cpu_s();
	my $out = $psql->query_safe("SELECT string_agg(DISTINCT (f->>'status') || '/' || "
		  . "jsonb_array_length(f->'tls_addresses'), ',') FROM appguard_snapshot_many(ARRAY[$names], array_fill($port, ARRAY[$hosts])) f");
	return (cpu_s() - $c0, $out);
}

# openssl s_time -new against the first address: CPU a handshake (user +
# system of the client, as the backend's schedstat counts its own)
sub s_time_cpu
{
	my ($secs) = @_;
	my $t0 = [ times ];
	my $out = `openssl s_time -connect $a[0]:$port -new -time $secs -CAfile ${\ $env->ca_file } 2>&1`;
	my $t1 = [ times ];
	my ($n) = $out =~ /(\d+) connections in [\d.]+s/;
	my $cpu = ($t1->[2] - $t0->[2]) + ($t1->[3] - $t0->[3]);
	return $n ? $cpu / $n : undef;
}

many('one');    # warm-up: library, trust store
my (@one, @four, @extra, @stime);
for my $r (1 .. $rounds)
{
	my ($c1, $s1) = many('one');
	my ($c4, $s4) = many('four');
	my $hs = s_time_cpu(3);
	push @one,   1000 * $c1 / $hosts;
	push @four,  1000 * $c4 / $hosts;
	push @extra, (1000 * ($c4 - $c1) / $hosts) / 3;
	push @stime, 1000 * $hs if defined $hs;
	note sprintf 'round %d: one address %.3f ms a host (%s), four %.3f ms a host (%s): %.3f ms a further address; '
	  . 's_time -new %s ms a handshake', $r, $one[-1], $s1, $four[-1], $s4, $extra[-1],
	  defined $hs ? sprintf('%.3f', 1000 * $hs) : '?';
}

sub median { my @s = sort { $a <=> $b } @_; return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
sub range  { my @s = sort { $a <=> $b } @_; return sprintf '%.3f–%.3f', $s[0], $s[-1] }
note sprintf 'backend CPU a host, median of %d rounds of %d hosts: one address %.3f ms (%s), four addresses %.3f ms (%s)',
  $rounds, $hosts, median(@one), range(@one), median(@four), range(@four);
note sprintf 'a further address: %.3f ms (%s); openssl s_time -new: %.3f ms a handshake (%s); ratio %.2f',
  median(@extra), range(@extra), median(@stime), range(@stime), median(@extra) / median(@stime)
  if @stime;
ok(@one == $rounds && @four == $rounds, "$rounds rounds measured");
$psql->quit;
$node->stop;
$env->stop;
done_testing;
