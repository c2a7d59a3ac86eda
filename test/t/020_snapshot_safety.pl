# Safety of a probe inside a backend: pg_cancel_backend and statement_timeout
# stop a probe stalled in the TLS handshake or in DNS with SQLSTATE 57014,
# quickly, leaving the backend usable; probes release every descriptor,
# whatever happened to them.  The same for a host of several addresses,
# whose probe stalls or fails at an address after the first.
use strict;
use warnings;

use lib 'test/perl';
use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node backend_fds create_wait_until_idle);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $env = AppGuard::TestEnv->new;
my $good = $env->tls_host('good.safety.test');
my $stall = $env->fault_server('stall');
my $garbage = $env->fault_server('garbage', close => 1);
my $reset = $env->fault_server('reset');
my $refused = $env->fault_server('refuse');
$env->zone(
	'safety.test',
	[
		"good A $good", "stall A $stall",
		"garbage A $garbage", "reset A $reset",
		"refused A $refused",
		# several addresses: the good one first (the lowest), then faults
		(map { "multi A $_" } $good, $stall, $garbage, $reset),
		(map { "multi2 A $_" } $good, $garbage, $reset, $refused),
	]);
$env->start;

my $node = start_node('safety', $env);
create_wait_until_idle($node);

# Until the backend has been probing for 300 ms (false after 20 s)
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION wait_until_probing(target int) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 2000 LOOP
		PERFORM pg_stat_clear_snapshot();
		IF EXISTS (SELECT FROM pg_stat_activity
				   WHERE pid = target AND state = 'active'
					 AND query LIKE '%appguard_probe%'
					 AND clock_timestamp() - query_start > interval '300 ms') THEN
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

# Warm up: the first probe loads the library and the trust store.
is($session->query_safe("SELECT appguard_probe('good.safety.test', 8443)->>'status'"),
	'ok', 'a good host measures ok');
my $fds_at_start = fd_count();
my $fd_list_at_start = fds();

# Cancel a probe that waits; returns (stderr, cancel latency in ms)
sub cancel_during
{
	my ($sql) = @_;
	$session->{stdin} .= "$sql;\n\\echo 'done'\n\\warn 'done'\n";
	# hand the statement to psql without waiting for its result
	$session->{run}->pump_nb() while length $session->{stdin};
	my $probing = $node->safe_psql('postgres', "SELECT wait_until_probing($pid)");
	if ($probing ne 't')
	{
		$session->{run}->pump() until $session->{stderr} =~ /done\r?\n/;
		diag "the probe was not running: stdout $session->{stdout} stderr $session->{stderr}";
		return ($session->{stderr}, -1);
	}
	my $ms = $node->safe_psql('postgres',
		"SELECT wait_until_idle($pid, clock_timestamp()) FROM (SELECT pg_cancel_backend($pid)) c");
	$session->{run}->pump() until $session->{stderr} =~ /done\r?\n/;
	my $err = $session->{stderr};
	$session->{stdout} = '';
	$session->{stderr} = '';
	return ($err, $ms);
}

$session->query_safe('SET appguard.timeout_ms = 60000');

my ($err, $ms) = cancel_during("SELECT appguard_probe('stall.safety.test', 8443)");
like($err, qr/ERROR:  57014: canceling statement due to user request/,
	'cancel during a stalled TLS handshake: 57014');
cmp_ok($ms, '<', 500, "backend free again ${ms} ms after pg_cancel_backend (handshake)");
note "cancel latency, stalled handshake: $ms ms";
is($session->query_safe('SELECT 1'), '1', 'the backend is usable after the cancel');

# a host of several addresses: the first measured, a later one stalls
($err, $ms) = cancel_during("SELECT appguard_probe('multi.safety.test', 8443)");
like($err, qr/ERROR:  57014: canceling statement due to user request/,
	'cancel during a stalled handshake at a later address: 57014');
cmp_ok($ms, '<', 500, "backend free again ${ms} ms after pg_cancel_backend (later address)");
note "cancel latency, stalled handshake at the second address: $ms ms";
is($session->query_safe('SELECT 1'), '1', 'the backend is usable after the cancel');

# The same while every DNS question goes unanswered
$node->safe_psql('postgres',
	"ALTER SYSTEM SET appguard.dns_servers = '" . $env->silent_dns . "'; SELECT pg_reload_conf()");
$session->query_safe('SET appguard.dns_timeout_ms = 60000');
($err, $ms) = cancel_during("SELECT appguard_probe('good.safety.test', 8443)");
like($err, qr/ERROR:  57014: canceling statement due to user request/,
	'cancel while DNS is silent: 57014');
cmp_ok($ms, '<', 500, "backend free again ${ms} ms after pg_cancel_backend (DNS)");
note "cancel latency, silent DNS: $ms ms";
$session->query_safe('RESET appguard.dns_timeout_ms');
$node->safe_psql('postgres',
	'ALTER SYSTEM RESET appguard.dns_servers; SELECT pg_reload_conf()');
$node->append_conf('postgresql.conf', $env->postgresql_conf);
$node->reload;
is($session->query_safe("SELECT appguard_probe('good.safety.test', 8443)->>'status'"),
	'ok', 'measuring works again after the cancels');

# statement_timeout: the statement ends with 57014 soon after the timeout
$session->query_safe("SET statement_timeout = '1s'");
my $out;
($out) = $session->query(q{
SELECT appguard_probe('stall.safety.test', 8443)});
like($session->{stderr}, qr/ERROR:  57014: canceling statement due to statement timeout/,
	'statement_timeout during a stalled handshake: 57014');
$session->{stderr} = '';
my $late = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM state_change - query_start) * 1000 - 1000
	 FROM pg_stat_activity WHERE pid = $pid");
note "statement_timeout: the statement ended $late ms after the timeout";
cmp_ok($late, '<', 500, "the statement ended ${late} ms after statement_timeout");
$session->query_safe('RESET statement_timeout');
is($session->query_safe('SELECT 1'), '1', 'the backend is usable after statement_timeout');
cmp_ok(fd_count(), '==', $fds_at_start, 'no descriptor left open by cancelled probes');

# 1,000 probes, a third of them failing in different ways: the backend's
# descriptors come back to where they were.
$session->query_safe('SET appguard.timeout_ms = 300');
my $mix = $session->query_safe(q{
SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
FROM (
	SELECT appguard_probe(h, 8443)->>'status' AS status, count(*) AS n
	FROM generate_series(1, 1000) AS i,
		 LATERAL (SELECT CASE
			WHEN i % 10 < 6 THEN 'good.safety.test'
			WHEN i % 10 = 6 THEN 'refused.safety.test'
			WHEN i % 10 = 7 THEN 'missing.safety.test'
			WHEN i % 10 = 8 THEN CASE WHEN i % 20 = 8 THEN 'garbage.safety.test'
									 ELSE 'reset.safety.test' END
			ELSE CASE WHEN i % 50 = 9 THEN 'stall.safety.test'
					  ELSE 'good.safety.test' END
		 END AS h) AS pick
	GROUP BY 1) AS s});
note "1,000 probes: $mix";
like($mix, qr/connect_failed=100 dns_failed=100 ok=680 timeout=20 tls_failed=100/,
	'1,000 probes with the expected mix of outcomes');
cmp_ok(fd_count(), '==', $fds_at_start,
	"descriptors after 1,000 probes: " . fd_count() . " (at start: $fds_at_start)")
  or diag "at start:\n$fd_list_at_start\nnow:\n" . fds();

# Several addresses, failing after the first in every way (TLS garbage,
# reset, refused, a stall until the deadline): the probe is ok, each
# failure a fact of its address, and no descriptor stays open.
my $m = $session->query_safe(q{
SELECT f->>'status', (SELECT string_agg(e->>'status', ',' ORDER BY e->>'status')
					  FROM jsonb_array_elements(f->'tls_addresses') e)
FROM appguard_probe('multi.safety.test', 8443) f});
is($m, 'ok|not_measured,not_measured,ok,timeout',
	'a stall at the second address: the probe ok, that address timed out at the deadline, the later ones not measured');
$mix = $session->query_safe(q{
SELECT string_agg(s || '=' || n, ' ' ORDER BY s) FROM (
	SELECT s, count(*) AS n FROM (
		SELECT (f->>'status') || ':' || (SELECT string_agg(e->>'status', ',' ORDER BY e->>'status')
										 FROM jsonb_array_elements(f->'tls_addresses') e) AS s
		FROM generate_series(1, 200) AS i, LATERAL appguard_probe('multi2.safety.test' || repeat('', i), 8443) f) p
	GROUP BY s) q});
note "200 probes of four addresses: $mix";
like($mix, qr/^ok:connect_failed,ok,tls_failed,tls_failed=200$/,
	'200 probes of a host of four addresses, three failing after the first: every probe ok');
cmp_ok(fd_count(), '==', $fds_at_start,
	"descriptors after probes of several addresses: " . fd_count() . " (at start: $fds_at_start)")
  or diag "at start:\n$fd_list_at_start\nnow:\n" . fds();

$session->quit;
$node->stop;
$env->stop;
done_testing();
