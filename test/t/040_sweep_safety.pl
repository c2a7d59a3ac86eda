# A sweep inside a backend, safely: pg_cancel_backend and statement_timeout
# stop a sweep of 1,000 hosts (most of them stalled, 128 in flight) with
# SQLSTATE 57014 within half a second, close every socket, and keep the
# snapshots already committed; descriptors come back to where they were
# after every sweep (cancelled, mixed with stalling and refusing hosts, or
# asking for more concurrency than PostgreSQL gives extensions
# descriptors); the budget stops new hosts from starting.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node backend_fds create_wait_until_idle);

my $t0   = time;
my $env  = AppGuard::TestEnv->new;
my $port = $env->tls_port;

# 750 good names on five nginx addresses (a wildcard certificate), names
# that stall and names that refuse, all in one zone.
$env->cert('wild', cn => '*.safe.test', san => ['*.safe.test'], key => 'ec256');
my @good_addr = map { $env->tls_host("web$_.safe.test", cert => 'wild') } 1 .. 5;
my $stall = $env->fault_server('stall');
my $refused = $env->fault_server('refuse');
my @records;
push @records, sprintf('%s%03d A %s', $_->[0], $_->[1], $good_addr[ $_->[1] % 5 ])
  for (map { [ 'g', $_ ] } 1 .. 750), (map { [ 'w', $_ ] } 1 .. 20);
push @records, sprintf('s%03d A %s', $_, $stall) for 1 .. 750;
push @records, sprintf('r%03d A %s', $_, $refused) for 1 .. 125;
$env->zone('safe.test', \@records);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

my $node = start_node('sweep_safety', $env);
create_wait_until_idle($node);
is($node->safe_psql('postgres', 'SHOW max_files_per_process'), '1000',
	'a stock cluster: max_files_per_process 1000');

# Clients: which hosts a sweep measures is chosen by registering them
sub clients
{
	my (@hosts) = @_;
	$node->safe_psql('postgres', 'DELETE FROM appguard.clients');
	$node->safe_psql('postgres',
		"SELECT count(appguard_register_client('c' || i, 'App ' || i, ARRAY['https://' || h || ':$port/cb']))
		 FROM unnest(ARRAY[" . join(',', map { "'$_'" } @hosts) . "]) WITH ORDINALITY AS t(h, i)");
	return;
}
sub names { my ($prefix, $n) = @_; return map { sprintf "$prefix%03d.safe.test", $_ } 1 .. $n }

$node->safe_psql(
	'postgres', q{
-- until the running sweep of backend target has committed n snapshots
CREATE FUNCTION wait_until_measured(target int, n int) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 3000 LOOP
		IF EXISTS (SELECT FROM appguard.sweeps
				   WHERE pid = target AND state = 'running' AND measured >= n) THEN
			RETURN true;
		END IF;
		PERFORM pg_sleep(0.01);
	END LOOP;
	RETURN false;
END
$$;
});

my $session = $node->background_psql('postgres', on_error_stop => 0);
$session->query_safe('\set VERBOSITY verbose');
my $pid = $session->query_safe('SELECT pg_backend_pid()');

sub fds { return join "\n", backend_fds($node, $pid) }
sub fd_count { return scalar(my @fds = backend_fds($node, $pid)) }

# A first sweep loads the library and warms the caches.  (Hosts never
# measured come first in a sweep, then by name: the tests below choose
# which hosts run first with names never measured.)
clients(names('w', 20));
$session->query_safe("CALL appguard_sweep('0', '1 minute')");
my $fds_at_start = fd_count();
my $fd_list_at_start = fds();
note "descriptors at start: $fds_at_start";

sub fds_back
{
	my ($what) = @_;
	my $now = fd_count();
	cmp_ok($now, '==', $fds_at_start, "descriptors after $what: $now (at start: $fds_at_start)")
	  or diag "at start:\n$fd_list_at_start\nnow:\n" . fds();
	return;
}

# Start a statement in the session without waiting for it
sub start
{
	my ($sql) = @_;
	$session->{stdin} .= "$sql;\n\\echo __done__\n\\warn __done__\n";
	$session->{run}->pump_nb() while length $session->{stdin};
	return;
}

sub finish
{
	$session->{run}->pump() until $session->{stderr} =~ /__done__\r?\n/;
	my $err = $session->{stderr};
	$session->{stdout} = '';
	$session->{stderr} = '';
	return $err;
}

sub last_sweep
{
	return $node->safe_psql('postgres',
		"SELECT id || ' ' || state || ' ' || planned || ' ' || measured FROM appguard.sweeps ORDER BY id DESC LIMIT 1");
}

# Snapshots stored for the hosts of sweep id
sub stored
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM appguard.sweep_hosts sh JOIN appguard.snapshots s ON s.id = sh.snapshot_id
		 WHERE sh.sweep_id = $id");
}

# ---------------------------------------------------------------- cancel
# 1,000 hosts: 250 good ones first (names sort first), then 750 that stall
# for a minute.  Once the good ones are committed, the sweep has 128
# stalled connections open.
clients(names('g', 250), names('s', 750));
$session->query_safe('SET appguard.timeout_ms = 60000');
start("CALL appguard_sweep('0', '10 minutes')");
is($node->safe_psql('postgres', "SELECT wait_until_measured($pid, 250)"), 't',
	'the sweep committed the 250 good hosts and waits on stalled ones');
my ($sweep, $state, $planned, $measured) = split ' ', last_sweep();
is($planned, 1000, 'a sweep of 1,000 hosts');
# the stalled hosts connect: 128 more sockets than at start (c-ares's own
# socket is one more)
my $open = 0;
for (1 .. 500)
{
	$open = (() = fds() =~ /socket:/g) - (() = $fd_list_at_start =~ /socket:/g);
	last if $open >= 128;
	sleep 0.01;
}
note "sockets opened by the sweep: $open";
cmp_ok($open, '>=', 128, 'the default concurrency: 128 hosts in flight at once');
my $ms = $node->safe_psql('postgres',
	"SELECT wait_until_idle($pid, clock_timestamp()) FROM (SELECT pg_cancel_backend($pid)) c");
my $err = finish();
like($err, qr/ERROR:  57014: canceling statement due to user request/, 'pg_cancel_backend: 57014');
cmp_ok($ms, '<', 500, "the backend was free again ${ms} ms after pg_cancel_backend");
note "cancel latency: $ms ms";
fds_back('a cancelled sweep');
is(stored($sweep), 250, 'the 250 snapshots committed before the cancel are kept');
is($session->query_safe('SELECT 1'), '1', 'the backend is usable after the cancel');

# statement_timeout: the same, 57014 soon after the timeout
clients((names('g', 500))[ 250 .. 499 ], names('s', 750));
$session->query_safe("SET statement_timeout = '3s'");
start("CALL appguard_sweep('0', '10 minutes')");
$err = finish();
like($err, qr/ERROR:  57014: canceling statement due to statement timeout/, 'statement_timeout: 57014');
my $late = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM state_change - query_start) * 1000 - 3000 FROM pg_stat_activity WHERE pid = $pid");
cmp_ok($late, '<', 500, "the statement ended ${late} ms after statement_timeout");
note "statement_timeout: ended $late ms after the timeout";
$session->query_safe('RESET statement_timeout');
fds_back('a sweep stopped by statement_timeout');
my ($sweep2) = split ' ', last_sweep();
is(stored($sweep2), 250, 'the snapshots committed before the timeout are kept');
is($node->safe_psql('postgres', "SELECT state FROM appguard.sweeps WHERE id = $sweep"), 'aborted',
	'the cancelled sweep was finished as aborted by the next one');
$session->query_safe('RESET appguard.timeout_ms');

# ---------------------------------------------------------------- a quarter bad
clients(names('g', 750), names('s', 125), names('r', 125));
$session->query_safe('SET appguard.timeout_ms = 1000');
$session->query_safe("CALL appguard_sweep('0', '10 minutes')");
($sweep, $state, $planned, $measured) = split ' ', last_sweep();
is("$state $planned $measured", 'finished 1000 1000', 'a sweep of 1,000 hosts, a quarter stalling or refusing');
is($node->safe_psql('postgres',
		"SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM (
		   SELECT s.status, count(*) AS n FROM appguard.sweep_hosts sh JOIN appguard.snapshots s ON s.id = sh.snapshot_id
		   WHERE sh.sweep_id = $sweep GROUP BY 1) c"),
	'connect_failed=125 ok=750 timeout=125', 'each host with its outcome');
fds_back('a sweep where a quarter of the hosts stall or refuse');
$session->query_safe('RESET appguard.timeout_ms');

# ---------------------------------------------------------------- more than the descriptors
# PostgreSQL lets extensions hold about a third of max_files_per_process:
# asking for 1,024 stalling hosts at once runs as many as there are
# descriptors, the others wait for them.
clients(names('s', 500));
$session->query_safe('SET appguard.sweep_concurrency = 1024');
$session->query_safe('SET appguard.timeout_ms = 1000');
start("SET client_min_messages = debug1;\nCALL appguard_sweep('0', '10 minutes');\nRESET client_min_messages");
$err = finish();
$session->query_safe('RESET appguard.sweep_concurrency');
$session->query_safe('RESET appguard.timeout_ms');
my ($most) = $err =~ /appguard engine: 500 of 500 hosts probed, at most (\d+) at once/;
ok(defined $most, 'sweep_concurrency 1024 on a stock cluster: every host probed')
  or diag $err;
$most //= 0;
note "sweep_concurrency 1024: at most $most hosts in flight";
ok($most > 128 && $most < 334, "at most $most in flight: more than 128, within the descriptors extensions may hold");
unlike($err, qr/ERROR/, 'and no error');
($sweep, $state, $planned, $measured) = split ' ', last_sweep();
is("$state $measured", 'finished 500', 'all 500 measured');
fds_back('a sweep asking for more descriptors than there are');

# ---------------------------------------------------------------- the budget
# 16 at once, each stalling for 1.5 s, a budget of 1 s: the first 16
# start, nothing starts after the budget is spent.
clients(names('s', 100));
$session->query_safe('SET appguard.sweep_concurrency = 16');
$session->query_safe('SET appguard.timeout_ms = 1500');
$session->query_safe("CALL appguard_sweep('0', '1 second')");
is($node->safe_psql('postgres',
		"SELECT state || ' ' || planned || ' ' || measured || ' ' || (appguard.sweep_summary(id) ->> 'skipped')
		 FROM appguard.sweeps ORDER BY id DESC LIMIT 1"),
	'budget_exhausted 100 16 84', 'budget spent: 16 measured, 84 left for the next sweep');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM appguard.sweeps w JOIN appguard.sweep_hosts sh ON sh.sweep_id = w.id
		   JOIN appguard.snapshots s ON s.id = sh.snapshot_id
		 WHERE w.id = (SELECT max(id) FROM appguard.sweeps) AND s.taken_at > w.deadline"),
	0, 'no host started after the budget was spent');
fds_back('a sweep out of budget');

$session->quit;
$node->stop;
$env->stop;
note sprintf 'total %.1f s', time - $t0;
done_testing();
