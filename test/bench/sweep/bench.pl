#!/usr/bin/perl
# The sweep benchmark (test/bench/sweep.sh runs it): ratios measured side by
# side in one run, against real servers on loopback.
#
#   --hosts N      test hosts (default 1000), each on its own nginx address
#   --key TYPE     key type of the hosts' certificate: rsa2048 (default), ec256
#   --sample N     hosts measured one at a time to extrapolate the slow
#                  ways from (default 50); --full measures all of them
#   --delay MS     latency added per connection (default 200)
#   --snapshots N  snapshots taken in one backend for the memory check
#                  (default 10000)
#   --stime S      seconds of openssl s_time a round (default 5)
#   --rounds N     rounds of the latency- and CPU-bound measurements
#                  (default 3): the table gives the median and the range of
#                  the ratios, each measured side by side within a round
#   --cpu-only     only the CPU-bound rounds
#   --install DIR  the PostgreSQL installation (with appguard) to run,
#                  default the one on PATH (sweep.sh gives its own copy)
#   --before-install DIR, --before-label L
#                  a copy of the PostgreSQL installation with an earlier
#                  build of appguard (sweep.sh --before COMMIT makes it):
#                  the CPU-bound rounds run in a cluster of each build,
#                  interleaved, and report both and their ratio
#   --callgrind N  also count the instructions of appguard_snapshot_many of
#                  N hosts, per host, in a cluster of each build whose
#                  server runs under valgrind --tool=callgrind (needs the
#                  copies sweep.sh makes): repeatable where CPU time on a
#                  shared machine is not
#   AG_PERF=FILE   perf record -g of the first round's snapshot_many
#                  backend, to FILE.after (and FILE.before); AG_PERF_ARGS
#                  replaces -g (e.g. '--call-graph dwarf')
#
# Latency-bound: every host behind a delay proxy (TestEnv delay_proxies):
#   CALL appguard_sweep at the default concurrency, against the same sweep
#   at appguard.sweep_concurrency = 1 and a DBA's shell loop of kdig and
#   openssl s_client (test/bench/sweep/dba_loop.sh), both on a sample.
# CPU-bound: no added latency: snapshots per second of a sweep and of
#   appguard_snapshot_many, against openssl s_time -new handshakes per
#   second with the same servers and certificate; the backend's own CPU
#   time per host (/proc/PID/schedstat, what getrusage would count, in ns)
#   before and after each, and that time in handshakes of s_time.
# Memory and descriptors: one backend's private memory (RssAnon) before and
#   after N more snapshots; its descriptors after a sweep, a cancelled
#   sweep and a sweep where a quarter of the hosts stall or refuse.
use strict;
use warnings;

# PostgreSQL::Test::Utils sends STDOUT and STDERR to its log file when the
# program starts (INIT); the figures go to the terminal.
our ($OUT, $ERR);
BEGIN
{
	open $OUT, '>&', \*STDOUT or die "dup STDOUT: $!";
	open $ERR, '>&', \*STDERR or die "dup STDERR: $!";
	$OUT->autoflush(1);
	$SIG{__DIE__} = sub { print $ERR "bench: ", @_ unless $^S };
}

use FindBin;
use lib "$FindBin::Bin/../../perl";
use Getopt::Long;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils ();
use Test::More ();
use Time::HiRes qw(time sleep);

use AppGuard::TestEnv;

my %o = (hosts => 1000, key => 'rsa2048', sample => 50, delay => 200,
	snapshots => 10000, stime => 5, rounds => 3);
GetOptions(\%o, 'hosts=i', 'key=s', 'sample=i', 'full', 'delay=i', 'snapshots=i', 'stime=i', 'rounds=i',
	'cpu-only', 'install=s', 'before-install=s', 'before-label=s', 'callgrind=i')
  or die "usage: bench.pl [--hosts N] [--key rsa2048|ec256] [--sample N] [--full] [--delay MS] [--snapshots N] [--stime S] [--rounds N] [--cpu-only] [--before-install DIR [--before-label L]]\n";
$o{sample} = $o{hosts} if $o{full} || $o{sample} > $o{hosts};

# ... and so do the notes of PostgreSQL::Test::BackgroundPsql
Test::More->builder->$_(\*STDOUT) for qw(output failure_output todo_output);

my $t0 = time;
sub say { printf $OUT "[%6.1f s] %s\n", time - $t0, join '', @_ }
sub loadavg { my $l = `cat /proc/loadavg`; return (split ' ', $l)[0] }

# ---------------------------------------------------------------- servers
my $env = AppGuard::TestEnv->new;
my $port = $env->tls_port;
$env->cert('wild', cn => '*.bench.test', san => ['*.bench.test'], key => $o{key});
my (@direct, @names_h, @names_d, @names_s, @names_r, @records);
for my $i (1 .. $o{hosts})
{
	my $h = sprintf 'h%04d', $i;
	push @direct, $env->tls_host("$h.bench.test", cert => 'wild');
	push @names_h, "$h.bench.test";
	push @records, "$h A $direct[-1]";
}
my @delayed = $env->delay_proxies($o{delay}, \@direct);
for my $i (1 .. $o{hosts})
{
	my $d = sprintf 'd%04d', $i;
	push @names_d, "$d.bench.test";
	push @records, "$d A $delayed[ $i - 1 ]";
}
my $stall = $env->fault_server('stall');
my $refused = $env->fault_server('refuse');
for my $i (1 .. $o{hosts})
{
	push @names_s, sprintf('s%04d.bench.test', $i);
	push @names_r, sprintf('r%04d.bench.test', $i);
	push @records, sprintf('s%04d A %s', $i, $stall), sprintf('r%04d A %s', $i, $refused);
}
$env->zone('bench.test', \@records);
$env->start;
say "$o{hosts} hosts on nginx ($o{key}), $o{hosts} behind $o{delay} ms delay proxies, up";

my $node = PostgreSQL::Test::Cluster->new('bench', $o{install} ? (install_path => $o{install}) : ());
$node->init;
# durable commits, as in production
$node->append_conf('postgresql.conf', $env->postgresql_conf . "fsync = on\n");
$node->start;
say 'PostgreSQL ', $node->safe_psql('postgres', 'SHOW server_version'),
  ', max_files_per_process ', $node->safe_psql('postgres', 'SHOW max_files_per_process'),
  ', appguard.sweep_concurrency default ', $node->safe_psql('postgres',
	"CREATE EXTENSION appguard; SELECT appguard.setting('appguard.sweep_concurrency')");

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q) }

# A database whose clients watch @hosts, with a grant each once measured
sub database
{
	my ($db, @hosts) = @_;
	sql('postgres', "CREATE DATABASE $db");
	sql($db, 'CREATE EXTENSION appguard');
	sql($db, "SELECT count(appguard_register_client('c' || i, 'App ' || i, ARRAY['https://' || h || ':$port/cb']))
			  FROM unnest(ARRAY[" . join(',', map { "'$_'" } @hosts) . "]) WITH ORDINALITY AS t(h, i)");
	return;
}

sub grants
{
	my ($db) = @_;
	sql($db, "INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
			  SELECT 't-' || client_id, client_id, 'patient' FROM appguard.clients");
	return;
}

# Seconds the last sweep took, from its own row; and its counts
sub last_sweep
{
	my ($db) = @_;
	my ($secs, $state, $planned, $measured, $failed) = split /\|/, sql($db,
		'SELECT extract(epoch FROM finished_at - started_at), state, planned, measured, failed
		 FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
	die "sweep in $db: $state, $measured of $planned measured\n"
	  unless $state eq 'finished' && $measured == $planned;
	return ($secs, $failed);
}

# CPU seconds used by the env's servers and a backend during $code
sub cpu_of
{
	my ($backend, $code) = @_;
	my %kind;
	for my $pid ($env->processes)
	{
		my $cmd = do { local $/; open my $f, '<', "/proc/$pid/cmdline" or next; <$f> } // '';
		$kind{$pid} = $cmd =~ /nginx/ ? 'nginx' : $cmd =~ /knotd/ ? 'knotd'
		  : $cmd =~ /faultd/ ? 'proxy' : next;
	}
	$kind{$backend} = 'backend';
	my $read = sub {
		my %c;
		for my $pid (keys %kind)
		{
			open my $f, '<', "/proc/$pid/stat" or next;
			my @s = split ' ', (<$f> =~ s/^.*\)\s+//r);
			$c{ $kind{$pid} } += ($s[11] + $s[12]) / 100;
		}
		return \%c;
	};
	my $before = $read->();
	$code->();
	my $after = $read->();
	return { map { $_ => $after->{$_} - ($before->{$_} // 0) } keys %$after };
}

sub cpu_text
{
	my ($c, $n) = @_;
	return join ', ', map { sprintf '%s %.2f ms', $_, 1000 * $c->{$_} / $n } sort keys %$c;
}

my (@table, %figure);
sub row { push @table, [@_]; return }

# The median and range of the rounds: "median unit (low-high)"
sub median { my @v = sort { $a <=> $b } @_; return $v[ int($#v / 2) ] }
sub spread
{
	my ($fmt, $unit, @v) = @_;
	my @s = sort { $a <=> $b } @v;
	my $text = sprintf($fmt, median(@v)) . $unit;
	$text .= sprintf " ($fmt-$fmt)", $s[0], $s[-1] if @v > 1;
	return $text;
}

if (!$o{'cpu-only'})
{
# ---------------------------------------------------------------- latency-bound
# Each round: the sweep of every host at the default concurrency, the same
# sweep at concurrency 1 on the sample, the DBA loop on the sample.
say "latency-bound: every connection delayed $o{delay} ms; $o{rounds} rounds";
my @sample_d = @names_d[ 0 .. $o{sample} - 1 ];
database('lat', @names_d);
database('sample', @sample_d);
# first sweeps: measure everything once, so that grants get baselines
sql($_, "CALL appguard_sweep('0', '1 hour')") for qw(lat sample);
grants($_) for qw(lat sample);
sql('sample', "ALTER DATABASE sample SET appguard.sweep_concurrency = 1");
my $sampled = $o{sample} < $o{hosts} ? " (extrapolated from $o{sample})" : '';
my (@t_default, @t_one, @t_dba, @x_one, @x_dba);
for my $round (1 .. $o{rounds})
{
	my $lat = $node->background_psql('lat');
	my $lat_pid = $lat->query_safe('SELECT pg_backend_pid()');
	my $cpu = cpu_of($lat_pid, sub { $lat->query_safe("CALL appguard_sweep('0', '1 hour')") });
	my ($t_default) = last_sweep('lat');
	$lat->quit;

	sql('sample', "CALL appguard_sweep('0', '1 hour')");
	my ($t_one_sample) = last_sweep('sample');
	my $t_one = $t_one_sample * $o{hosts} / $o{sample};

	my ($dba_out, $dba_err) = ('', '');
	my $dba_start = time;
	IPC::Run::run([ 'bash', "$FindBin::Bin/dba_loop.sh", $env->dns_addr, $env->dns_port, $env->ca_file,
			$port, @sample_d ], '<', \undef, '>', \$dba_out, '2>', \$dba_err)
	  or die "dba_loop.sh failed: $dba_err";
	my $t_dba_sample = time - $dba_start;
	die "dba_loop.sh: $dba_err" if $dba_err =~ /failed/;
	my $t_dba = $t_dba_sample * $o{hosts} / $o{sample};

	push @t_default, $t_default;
	push @t_one, $t_one;
	push @t_dba, $t_dba;
	push @x_one, $t_one / $t_default;
	push @x_dba, $t_dba / $t_default;
	say sprintf '  round %d: sweep of %d hosts at the default concurrency %.2f s (CPU per host: %s); '
	  . 'concurrency 1 %.1f ms a host -> %.1f s%s; DBA loop %.1f ms a host -> %.1f s; %.0fx and %.0fx',
	  $round, $o{hosts}, $t_default, cpu_text($cpu, $o{hosts}), 1000 * $t_one_sample / $o{sample},
	  $t_one, $sampled ? ' (extrapolated)' : '', 1000 * $t_dba_sample / $o{sample}, $t_dba,
	  $t_one / $t_default, $t_dba / $t_default;
}
row("latency-bound, $o{delay} ms a connection", "sweep of $o{hosts} hosts, default concurrency",
	spread('%.2f', ' s', @t_default), '', '');
row('', "same sweep at concurrency 1$sampled", spread('%.1f', ' s', @t_one),
	spread('%.0f', 'x', @x_one), '>= 50x faster');
row('', "DBA loop: kdig, openssl s_client piped to openssl x509, a host at a time$sampled",
	spread('%.1f', ' s', @t_dba), spread('%.0f', 'x', @x_dba), '>= 100x faster');

}

# ---------------------------------------------------------------- CPU-bound
# Each round: a sweep, appguard_snapshot_many, openssl s_time; with
# --before-install, the same sweep and snapshot_many in the other build's
# cluster too, the order of the two builds alternating round by round.
say "CPU-bound: no added latency; $o{rounds} rounds";
my %sides = (after => { node => $node, label => 'working tree' });
if ($o{'before-install'})
{
	my $before = PostgreSQL::Test::Cluster->new('before', install_path => $o{'before-install'});
	$before->init;
	$before->append_conf('postgresql.conf', $env->postgresql_conf . "fsync = on\n");
	$before->start;
	$sides{before} = { node => $before, label => $o{'before-label'} // 'before' };
	say "before: $sides{before}{label} in its own cluster, from $o{'before-install'}";
	$before->safe_psql('postgres', 'CREATE EXTENSION appguard');
}
my $hosts_array = 'ARRAY[' . join(',', map { "'$_'" } @names_h) . ']';
my $ports_array = "array_fill($port, ARRAY[$o{hosts}])";
for my $side (values %sides)
{
	my $n = $side->{node};
	$n->safe_psql('postgres', 'CREATE DATABASE cpu');
	$n->safe_psql('cpu', 'CREATE EXTENSION appguard');
	$n->safe_psql('cpu', "SELECT count(appguard_register_client('c' || i, 'App ' || i, ARRAY['https://' || h || ':$port/cb']))
			  FROM unnest($hosts_array) WITH ORDINALITY AS t(h, i)");
	$n->safe_psql('cpu', "CALL appguard_sweep('0', '1 hour')");
	$n->safe_psql('cpu', "INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
			  SELECT 't-' || client_id, client_id, 'patient' FROM appguard.clients");
	$n->safe_psql('postgres', 'CREATE DATABASE many');
	$n->safe_psql('many', 'CREATE EXTENSION appguard');
	# warm: the first call of a backend loads the public suffix list
	$n->safe_psql('many', "SELECT count(*) FROM appguard_snapshot_many(ARRAY['$names_h[0]'], ARRAY[$port])");
}

# CPU time a backend has run, in seconds: /proc/PID/schedstat, in ns
sub backend_cpu
{
	my ($pid) = @_;
	open my $f, '<', "/proc/$pid/schedstat" or die "/proc/$pid/schedstat: $!";
	my ($ns) = split ' ', scalar <$f>;
	return $ns / 1e9;
}

# User and system CPU time a backend has run, in seconds: /proc/PID/stat,
# what getrusage(RUSAGE_SELF) in the backend would say (clock ticks)
sub backend_user_sys
{
	my ($pid) = @_;
	open my $f, '<', "/proc/$pid/stat" or die "/proc/$pid/stat: $!";
	my $line = <$f>;
	$line =~ s/^.*\) //;		# past the command name, which may hold spaces
	my @f = split ' ', $line;
	my $hz = 100;				# USER_HZ, as on every Linux this runs on
	return ($f[11] / $hz, $f[12] / $hz);
}

# One side's sweep and snapshot_many: rates, and backend CPU per host
sub cpu_side
{
	my ($side, $round) = @_;
	my $n = $side->{node};
	my $s = $n->background_psql('cpu');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	my $c0 = backend_cpu($pid);
	my $cpu = cpu_of($pid, sub { $s->query_safe("CALL appguard_sweep('0', '1 hour')") });
	my $c1 = backend_cpu($pid);
	$s->quit;
	my ($secs, $state, $planned, $measured) = split /\|/, $n->safe_psql('cpu',
		'SELECT extract(epoch FROM finished_at - started_at), state, planned, measured
		 FROM appguard.sweeps ORDER BY id DESC LIMIT 1');
	die "sweep: $state, $measured of $planned measured\n"
	  unless $state eq 'finished' && $measured == $planned;

	my $m = $n->background_psql('many');
	my $mpid = $m->query_safe('SELECT pg_backend_pid()');
	$m->query_safe("SELECT count(*) FROM appguard_snapshot_many(ARRAY['$names_h[0]'], ARRAY[$port])");
	$m->query_safe('\timing on');
	my $t_many;
	my $perf;
	if ($ENV{AG_PERF} && $round == 1)
	{
		my $file = "$ENV{AG_PERF}.$side->{name}";
		$perf = IPC::Run::start([ 'perf', 'record', '-q', split(' ', $ENV{AG_PERF_ARGS} // '-g'),
				'-o', $file, '-p', $mpid ],
			'<', \undef, '>', \my $po, '2>', \my $pe);
		sleep 0.5;
	}
	my $m0 = backend_cpu($mpid);
	my @rs0 = backend_user_sys($mpid);
	my $cpu_many = cpu_of($mpid, sub {
		my $out = $m->query_safe("SELECT count(*) FROM appguard_snapshot_many($hosts_array, $ports_array)");
		($t_many) = $out =~ /Time: ([0-9.]+) ms/;
		$t_many /= 1000;
	});
	my $m1 = backend_cpu($mpid);
	my @rs1 = backend_user_sys($mpid);
	my $probes = $n->safe_psql('many', "SELECT format('probes took %s ms on average (at most %s), %s not ok',
			round(avg((facts->>'elapsed_ms')::numeric)), max((facts->>'elapsed_ms')::int),
			count(*) FILTER (WHERE status <> 'ok'))
		FROM (SELECT facts, status FROM appguard.snapshots ORDER BY id DESC LIMIT $o{hosts}) s");
	if ($perf)
	{
		$perf->signal('INT');
		$perf->finish;
	}

	# one host a call, as at a refresh: appguard_snapshot with the system's
	# trust store (appguard.ca_file = ''; the test CA's hosts then fail
	# verification, which costs the same)
	$m->query_safe("SET appguard.ca_file = ''");
	$m->query_safe("SELECT appguard_snapshot('$names_h[1]', $port)");
	my $calls = 50;
	my $s0 = backend_cpu($mpid);
	$m->query_safe("SELECT appguard_snapshot('$names_h[1]', $port)") for 1 .. $calls;
	my $s1 = backend_cpu($mpid);
	$m->quit;
	return {
		sweep_rate => $o{hosts} / $secs, sweep_cpu => 1000 * ($c1 - $c0) / $o{hosts},
		many_rate => $o{hosts} / $t_many, many_cpu => 1000 * ($m1 - $m0) / $o{hosts},
		one_cpu => 1000 * ($s1 - $s0) / $calls,
		text => sprintf('sweep %.0f snapshots/s, backend %.2f ms a host (%s); '
			  . 'appguard_snapshot_many %.0f/s, backend %.2f ms a host (user %.2f ms, system %.2f ms; %s; %s); '
			  . 'appguard_snapshot of one host with the system trust store, backend %.2f ms a call',
			  $o{hosts} / $secs, 1000 * ($c1 - $c0) / $o{hosts}, cpu_text($cpu, $o{hosts}),
			  $o{hosts} / $t_many, 1000 * ($m1 - $m0) / $o{hosts},
			  1000 * ($rs1[0] - $rs0[0]) / $o{hosts}, 1000 * ($rs1[1] - $rs0[1]) / $o{hosts},
			  cpu_text($cpu_many, $o{hosts}), $probes,
			  1000 * ($s1 - $s0) / $calls),
	};
}

$sides{$_}{name} = $_ for keys %sides;
my @order = sort keys %sides;    # after, before
my (@r_stime, @r_stime_cpu, %fig);
for my $round (1 .. $o{rounds})
{
	my @this = $round % 2 ? reverse(@order) : @order;    # before first in odd rounds
	for my $name (@this)
	{
		my $f = cpu_side($sides{$name}, $round);
		push @{ $fig{$name}{$_} }, $f->{$_} for qw(sweep_rate sweep_cpu many_rate many_cpu one_cpu);
		say "  round $round, $name ($sides{$name}{label}): $f->{text}";
	}

	# s_time's own CPU time (its children's, as getrusage counts them):
	# what a bare client handshake costs, against the backend's per host
	my ($st_out, $st_err) = ('', '');
	my $stime_start = time;
	my @t0 = times;
	IPC::Run::run([ 'openssl', 's_time', '-connect', "$direct[0]:$port", '-new', '-time', $o{stime} ],
		'<', \undef, '>', \$st_out, '2>', \$st_err);
	my @t1 = times;
	my $stime_wall = time - $stime_start;
	my ($conns) = $st_out =~ /(\d+) connections in [0-9.]+s;/ or die "openssl s_time: $st_out$st_err";
	my $rate_stime = $conns / $stime_wall;
	my $stime_cpu = 1000 * ($t1[2] + $t1[3] - $t0[2] - $t0[3]) / $conns;
	push @r_stime, $rate_stime;
	push @r_stime_cpu, $stime_cpu;
	for my $name (@order)
	{
		push @{ $fig{$name}{sweep_x} }, $fig{$name}{sweep_rate}[-1] / $rate_stime;
		push @{ $fig{$name}{many_x} }, $fig{$name}{many_rate}[-1] / $rate_stime;
		push @{ $fig{$name}{many_hs} }, $fig{$name}{many_cpu}[-1] / $stime_cpu;
	}
	say sprintf '  round %d: openssl s_time -new %d handshakes in %.2f s, %.0f/s, its CPU %.3f ms a handshake; '
	  . 'appguard_snapshot_many %s of s_time; its backend CPU a host = %s of s_time\'s CPU a handshake',
	  $round, $conns, $stime_wall, $rate_stime, $stime_cpu,
	  join(', ', map { sprintf '%s %.2f', $_, $fig{$_}{many_x}[-1] } @order),
	  join(', ', map { sprintf '%s %.2f', $_, $fig{$_}{many_hs}[-1] } @order);
	if ($sides{before})
	{
		push @{ $fig{ratio}{many_cpu} }, $fig{after}{many_cpu}[-1] / $fig{before}{many_cpu}[-1];
		push @{ $fig{ratio}{sweep_cpu} }, $fig{after}{sweep_cpu}[-1] / $fig{before}{sweep_cpu}[-1];
		push @{ $fig{ratio}{one_cpu} }, $fig{after}{one_cpu}[-1] / $fig{before}{one_cpu}[-1];
		say sprintf '  round %d: backend CPU a host, after / before: appguard_snapshot_many %.3f, sweep %.3f, '
		  . 'appguard_snapshot of one host %.3f',
		  $round, $fig{ratio}{many_cpu}[-1], $fig{ratio}{sweep_cpu}[-1], $fig{ratio}{one_cpu}[-1];
	}
}
for my $name (@order)
{
	say "  $name: a stored snapshot: ", $sides{$name}{node}->safe_psql('many',
		"SELECT format('facts %s bytes stored (%s), chain %s bytes stored (%s)',
				round(avg(pg_column_size(facts))), string_agg(DISTINCT coalesce(pg_column_compression(facts), 'not compressed'), ', '),
				round(avg(pg_column_size(chain))), string_agg(DISTINCT coalesce(pg_column_compression(chain), 'not compressed'), ', '))
		 FROM appguard.snapshots WHERE status = 'ok'");
}
row('CPU-bound, no added latency', "openssl s_time -new, same servers and $o{key} certificate",
	spread('%.0f', ' handshakes/s', @r_stime), '', '');
row('', 'openssl s_time -new: its own CPU a handshake', spread('%.3f', ' ms', @r_stime_cpu), '', '');
for my $name (@order)
{
	my $f = $fig{$name};
	my $who = $sides{before} ? "$name ($sides{$name}{label}): " : '';
	row('', "${who}sweep of $o{hosts} hosts (measure, store, evaluate)",
		spread('%.0f', ' snapshots/s', @{ $f->{sweep_rate} }), spread('%.2f', ' of s_time', @{ $f->{sweep_x} }),
		'>= 0.5');
	row('', "${who}appguard_snapshot_many of $o{hosts} hosts (measure, store)",
		spread('%.0f', ' snapshots/s', @{ $f->{many_rate} }), spread('%.2f', ' of s_time', @{ $f->{many_x} }),
		'>= 0.5');
	row('', "${who}backend CPU a host, sweep", spread('%.2f', ' ms', @{ $f->{sweep_cpu} }), '', '');
	row('', "${who}backend CPU a host, appguard_snapshot_many",
		spread('%.2f', ' ms', @{ $f->{many_cpu} }),
		spread('%.2f', ' x s_time CPU', @{ $f->{many_hs} }), '<= 1.4 ms');
	row('', "${who}backend CPU a call, appguard_snapshot of one host, system trust store",
		spread('%.2f', ' ms', @{ $f->{one_cpu} }), '', '');
}
if ($sides{before})
{
	row('', 'backend CPU a host, after / before: appguard_snapshot_many', '',
		spread('%.3f', '', @{ $fig{ratio}{many_cpu} }), '<= 0.5');
	row('', 'backend CPU a host, after / before: sweep', '', spread('%.3f', '', @{ $fig{ratio}{sweep_cpu} }), '');
	row('', 'backend CPU a call, after / before: appguard_snapshot of one host', '',
		spread('%.3f', '', @{ $fig{ratio}{one_cpu} }), '');
	$sides{before}{node}->stop;
}

# ---------------------------------------------------------------- instructions
# Instructions executed in appguard_snapshot_many, per host, for each build:
# a backend's count for one warm-up host plus N hosts, less another
# backend's count for the warm-up host alone.  Concurrency 8 and long
# deadlines: under valgrind everything runs some fifty times slower.
sub callgrind_ir
{
	my ($dir, $pid) = @_;
	my $file = "$dir/callgrind.out.$pid";
	for (1 .. 600)
	{
		last if -s $file;
		sleep 0.1;
	}
	open my $f, '<', $file or die "$file: $!";
	while (<$f>) { return $1 if /^(?:summary|totals):\s+(\d+)/ }
	die "$file: no totals\n";
}

if ($o{callgrind})
{
	say "instructions: appguard_snapshot_many of $o{callgrind} hosts under callgrind, each build";
	my $n = $o{callgrind};
	my $cg_hosts = 'ARRAY[' . join(',', map { "'$_'" } @names_h[ 1 .. $n ]) . ']';
	my $warm = "SELECT count(*) FROM appguard_snapshot_many(ARRAY['$names_h[0]'], ARRAY[$port])";
	my %ir;
	for my $name (@order)
	{
		# kept next to AG_PERF's profiles, for callgrind_annotate
		my $dir = $ENV{AG_PERF} ? "$ENV{AG_PERF}.cg_$name" : PostgreSQL::Test::Utils::tempdir("cg_$name");
		mkdir $dir;
		chmod 0777, $dir;
		my $cg = PostgreSQL::Test::Cluster->new("cg_$name",
			install_path => ($name eq 'before' ? $o{'before-install'} : $o{install}));
		$cg->init;
		$cg->append_conf('postgresql.conf', $env->postgresql_conf
			  . "appguard.sweep_concurrency = 8\nappguard.timeout_ms = 120000\n"
			  . "appguard.connect_timeout_ms = 60000\nappguard.dns_timeout_ms = 60000\n");
		{
			local $ENV{AG_CALLGRIND} = $dir;
			$cg->start;
		}
		$cg->safe_psql('postgres', 'CREATE EXTENSION appguard');
		my @count;
		for my $call ([$warm], [ $warm, "SELECT count(*) FROM appguard_snapshot_many($cg_hosts, array_fill($port, ARRAY[$n]))" ])
		{
			my $s = $cg->background_psql('postgres', timeout => 3600);
			my $pid = $s->query_safe('SELECT pg_backend_pid()');
			$s->query_safe($_) for @$call;
			$s->quit;
			push @count, callgrind_ir($dir, $pid);
		}
		$ir{$name} = ($count[1] - $count[0]) / $n;
		$cg->stop;
		say sprintf '  %s (%s): %.2f million instructions a host (%d and %d in all)',
		  $name, $sides{$name}{label}, $ir{$name} / 1e6, @count;
	}
	row('instructions (callgrind)', "appguard_snapshot_many of $n hosts: instructions a host, $_ ($sides{$_}{label})",
		sprintf('%.2f million', $ir{$_} / 1e6), '', '') for @order;
	if ($ir{before})
	{
		row('', 'instructions a host, after / before', '', sprintf('%.3f', $ir{after} / $ir{before}), '');
		say sprintf '  after / before: %.3f', $ir{after} / $ir{before};
	}
}

if (!$o{'cpu-only'})
{
# ---------------------------------------------------------------- memory
say "memory: one backend, $o{snapshots} more snapshots";
my $mem = $node->background_psql('cpu');
my $mem_pid = $mem->query_safe('SELECT pg_backend_pid()');
sub status_kb
{
	my ($pid) = @_;
	open my $f, '<', "/proc/$pid/status" or die "/proc/$pid/status: $!";
	my %kb = map { /^(\w+):\s+(\d+) kB/ ? ($1 => $2) : () } <$f>;
	return \%kb;
}
$mem->query_safe("CALL appguard_sweep('0', '1 hour')");    # warm
my $m0 = status_kb($mem_pid);
my $taken = 0;
my @trend;
while ($taken < $o{snapshots})
{
	$mem->query_safe("CALL appguard_sweep('0', '1 hour')");
	$taken += $o{hosts};
	push @trend, sprintf '%.1f', status_kb($mem_pid)->{RssAnon} / 1024;
}
my $m1 = status_kb($mem_pid);
say "  RssAnon (MB) after each sweep of $o{hosts}: @trend";
$mem->quit;
my $anon = ($m1->{RssAnon} - $m0->{RssAnon}) / 1024;
say sprintf '  after %d snapshots: private memory (RssAnon) %+.1f MB (%.1f -> %.1f MB); VmRSS %+.1f MB, of which shared buffers touched (RssShmem) %+.1f MB',
  $taken, $anon, $m0->{RssAnon} / 1024, $m1->{RssAnon} / 1024,
  ($m1->{VmRSS} - $m0->{VmRSS}) / 1024, ($m1->{RssShmem} - $m0->{RssShmem}) / 1024;
row('memory', "backend private memory (RssAnon) growth over $taken snapshots",
	sprintf('%+.1f MB', $anon), '', '<= 16 MB');

# ---------------------------------------------------------------- descriptors
say 'descriptors of one backend';
my $pgdata = $node->data_dir;
sub fds
{
	my ($pid) = @_;
	opendir(my $dh, "/proc/$pid/fd") or die "/proc/$pid/fd: $!";
	my @fds = grep { !/^\./ } readdir($dh);
	closedir($dh);
	return scalar grep { (readlink("/proc/$pid/fd/$_") // '') !~ m{^\Q$pgdata\E/} } @fds;
}
my $quarter = int($o{hosts} / 8);
database('fd', @names_h[ 0 .. $o{hosts} - 2 * $quarter - 1 ], @names_s[ 0 .. $quarter - 1 ],
	@names_r[ 0 .. $quarter - 1 ]);
sql('postgres', 'CREATE DATABASE stalled');
sql('stalled', 'CREATE EXTENSION appguard');
sql('stalled', "SELECT count(appguard_register_client('c' || i, 'App ' || i, ARRAY['https://' || h || ':$port/cb']))
				FROM unnest(ARRAY[" . join(',', map { "'$_'" } @names_s) . "]) WITH ORDINALITY AS t(h, i)");
my $fd = $node->background_psql('fd', on_error_stop => 0);
my $fd_pid = $fd->query_safe('SELECT pg_backend_pid()');
$fd->query_safe("SET appguard.timeout_ms = 1000");
$fd->query_safe("SELECT appguard_probe('$names_h[0]', $port)");    # warm
my $fd0 = fds($fd_pid);
$fd->query_safe("CALL appguard_sweep('0', '1 hour')");
my $fd1 = fds($fd_pid);
my ($t_quarter, $failed_quarter) = last_sweep('fd');
# a cancelled sweep: every host stalls; cancel once 128 are in flight
$fd->query_safe('\c stalled');
$fd_pid = $fd->query_safe('SELECT pg_backend_pid()');
$fd->query_safe("SET appguard.timeout_ms = 60000");
$fd->query_safe("SELECT appguard_probe('$names_h[0]', $port)");    # warm
my $fd2a = fds($fd_pid);
$fd->{stdin} .= "CALL appguard_sweep('0', '1 hour');\n\\warn __done__\n";
$fd->{run}->pump_nb() while length $fd->{stdin};
my $in_flight = 0;
for (1 .. 500)
{
	$in_flight = fds($fd_pid) - $fd2a;
	last if $in_flight >= 128;
	sleep 0.01;
}
sql('postgres', "SELECT pg_cancel_backend($fd_pid)");
$fd->{run}->pump() until $fd->{stderr} =~ /__done__/;
my $cancelled = $fd->{stderr} =~ /canceling statement due to user request/;
$fd->{stderr} = '';
my $fd2 = fds($fd_pid);
$fd->quit;
say sprintf '  sweep with a quarter stalling or refusing (%d of %d failed, %.2f s): %d descriptors before, %d after',
  $failed_quarter, $o{hosts}, $t_quarter, $fd0, $fd1;
say sprintf '  cancelled sweep (%s, %d descriptors open while it ran): %d before, %d after',
  $cancelled ? '57014' : 'NOT cancelled', $in_flight, $fd2a, $fd2;
row('descriptors', 'after a sweep where a quarter of the hosts stall or refuse', "$fd0 -> $fd1",
	$fd0 == $fd1 ? 'back to the start' : 'LEAK', 'back to the start');
row('', "after a cancelled sweep ($in_flight open while it ran)", "$fd2a -> $fd2",
	$fd2a == $fd2 && $cancelled ? 'back to the start' : 'LEAK', 'back to the start');

}

# ---------------------------------------------------------------- report
$node->stop;
$env->stop;
say sprintf 'done; load average now %s (2 cores, shared)', loadavg();
print $OUT "\n";
my @w = (0, 0, 0, 0, 0);
for my $r (@table) { $w[$_] = length $r->[$_] > $w[$_] ? length $r->[$_] : $w[$_] for 0 .. 4 }
my @head = ('', 'measured', 'result', 'ratio', 'goal');
for my $r (\@head, [ map { '-' x $_ } @w ], @table)
{
	printf $OUT "| %-*s | %-*s | %*s | %*s | %-*s |\n", $w[0], $r->[0], $w[1], $r->[1], $w[2], $r->[2],
	  $w[3], $r->[3], $w[4], $r->[4];
}
