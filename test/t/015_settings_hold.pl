# Settings hold (issue 10, finding 3).  The configuration of both clusters
# says appguard.confirmations = 3, an error_uri template and the test DNS
# server; a non-superuser's connection options (PGOPTIONS) try
# confirmations = 2 and another template.
#
# Loaded late (not preloaded), PostgreSQL refuses those values when the
# library loads and falls back to the built-in defaults, losing the
# configured values for that session: appguard then refuses to measure or
# suspend in it (55000), while a session of the same role without the
# options works with the configured values (three drifting snapshots to
# suspend, the configured error_uri).  Preloaded (the supported set-up),
# PostgreSQL refuses such a connection outright, and the deadlines are
# superuser-only like the other settings that decide what a stored
# snapshot says.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node);

my $env = AppGuard::TestEnv->new;
my %id = (o => 'Example Health, Inc.', c => 'US', st => 'Wisconsin', l => 'Verona', policies => ['OV']);
$env->cert('app', %id, san => ['app.hold.test']);
$env->cert('app-other', %id, o => 'Other Health Corp', san => ['app.hold.test'], key_of => 'app');
my $addr = $env->tls_host('app.hold.test', cert => 'app');
$env->zone('hold.test', [ "app A $addr", '@ TXT "appguard-client-id=hold-app"' ]);
$env->start;
my $port = $env->tls_port;

my $conf = <<'CONF';
appguard.confirmations = 3
appguard.error_uri_template = 'https://auth.hold.test/why/{suspension_id}'
appguard.baseline_timeout_ms = 3000
CONF
my $hostile = '-c appguard.confirmations=2 -c appguard.error_uri_template=x';

# Run SQL as a role with connection options; returns (exit code, stdout,
# stderr).  Errors are printed with their SQLSTATE.
sub run_as
{
	my ($node, $role, $options, $sql) = @_;
	local $ENV{PGOPTIONS} = $options // '';
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', $role ], stdout => \$out, stderr => \$err,
		on_error_stop => 1);
	return ($rc, $out, $err);
}

sub setup
{
	my ($node) = @_;
	$node->safe_psql('postgres', <<"SQL");
CREATE ROLE ag_ops LOGIN IN ROLE appguard_operator, appguard_auth_server;
SELECT appguard_register_client('hold-app', 'Hold App',
	ARRAY['https://app.hold.test:$port/callback']);
SELECT appguard_snapshot('app.hold.test', $port);
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('t1', 'hold-app', 'patient-1');
SQL
	return;
}

sub token_status
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT status || coalesce(' ' || error_uri, '') FROM appguard.refresh_tokens WHERE token_id = 't1'});
}

sub snapshots { return $_[0]->safe_psql('postgres', 'SELECT count(*) FROM appguard.snapshots') }

# ---------------------------------------------------------------- loaded late
my $late = start_node('late', $env, preload => 0, conf => $conf);
setup($late);
is(token_status($late), 'active', 'late: the token is active on its baseline');
$env->tls_host('app.hold.test', addr => $addr, cert => 'app-other');
$env->reload;

my $lost = qr/ERROR:  55000: appguard refuses to measure or suspend in this session: superuser-only settings lost their configured values: appguard\.confirmations, appguard\.error_uri_template/;
my %entry = (
	'appguard_snapshot'      => "SELECT appguard_snapshot('app.hold.test', $port)",
	'appguard_snapshot_many' => "SELECT * FROM appguard_snapshot_many(ARRAY['app.hold.test'], ARRAY[$port])",
	'appguard_probe'         => "SELECT appguard_probe('app.hold.test', $port)",
	# SQL that reads settings (appguard_setting), as the extension's owner
	'appguard_consent_info' => "SELECT appguard_consent_info('hold-app')",
);
my $before = snapshots($late);
for my $fn (sort keys %entry)
{
	my ($rc, $out, $err) = run_as($late, 'ag_ops', $hostile, $entry{$fn});
	like($err, $lost, "late, PGOPTIONS session: $fn refused with 55000, naming the lost settings");
	like($err, qr/HINT:  Fix the configured values, preload appguard \(shared_preload_libraries = 'appguard'\)/,
		"late, PGOPTIONS session: $fn error hints at preloading");
}
{
	# made-up names first (placeholders sort by name) do not hide the real one
	my $many = join ' ', map { "-c appguard.aa$_=x" } 1 .. 40;
	my ($rc, $out, $err) = run_as($late, 'ag_ops', "$many -c appguard.confirmations=2", $entry{appguard_probe});
	like($err, qr/ERROR:  55000: .*lost their configured values: appguard\.confirmations$/m,
		'late, PGOPTIONS session with 40 made-up appguard.* names: still refused');
}
{
	# what PostgreSQL did: refused the values and kept the built-in default
	my ($rc, $out, $err) = run_as($late, 'ag_ops', $hostile,
		"SELECT appguard_normalize_host('loads.the.library.test');\nSHOW appguard.confirmations;");
	like($err, qr/WARNING:  42501: permission denied to set parameter "appguard.confirmations"/,
		'late, PGOPTIONS session: PostgreSQL refuses the value when the library loads');
	like($out, qr/^1$/m, 'late, PGOPTIONS session: confirmations fell back to the built-in 1, not the configured 3');
}
{
	# a sweep in that session stores nothing and suspends nobody
	my ($rc, $out, $err) = run_as($late, 'ag_ops', $hostile, q{CALL appguard_sweep('0 s', '1 min')});
	like($err, qr/ERROR:  55000: appguard refuses to measure or suspend/, 'late, PGOPTIONS session: a sweep fails with 55000');
	is($late->safe_psql('postgres',
			'SELECT count(*) FROM appguard.sweep_hosts WHERE snapshot_id IS NOT NULL OR error IS NOT NULL'),
		'0', 'late, PGOPTIONS session: ... before measuring any host');
}
is(snapshots($late), $before, 'late, PGOPTIONS session: no snapshot was stored');
is(token_status($late), 'active', 'late, PGOPTIONS session: nothing was suspended');

# the same role without the options: the configured values, and it measures
{
	my ($rc, $out, $err) = run_as($late, 'ag_ops', undef,
		"SELECT appguard_normalize_host('loads.the.library.test') IS NOT NULL;\n"
		  . "SELECT current_setting('appguard.confirmations') || ' ' || current_setting('appguard.error_uri_template');");
	is((split /\n/, $out)[1], '3 https://auth.hold.test/why/{suspension_id}', 'late, plain session: the configured values')
	  or diag $err;
}
for my $n (1 .. 3)
{
	my ($rc, $out, $err) = run_as($late, 'ag_ops', undef,
		"SELECT f->>'status' || ' ' || (f->'tls'->'leaf'->'subject'->>'O') FROM appguard_snapshot('app.hold.test', $port) f");
	is($out, 'ok Other Health Corp', "late, plain session: drifting snapshot $n measured (configured DNS server)")
	  or diag $err;
	if ($n < 3)
	{
		is(token_status($late), 'active', "late, plain session: not suspended after $n of 3 confirmations");
	}
}
like(token_status($late), qr{^suspended https://auth\.hold\.test/why/\d+$},
	'late, plain session: suspended at the third drifting snapshot, with the configured error_uri');

# a superuser's options are applied, and its session measures
{
	my ($rc, $out, $err) = run_as($late, 'postgres', '-c appguard.confirmations=2',
		"SELECT appguard.setting('appguard.confirmations');");
	is($out, '2', "late: a superuser's connection options apply and nothing is refused") or diag $err;
}
# a non-superuser's SET before the load is refused at load, and the
# configured value stays: nothing lost, nothing refused
{
	my ($rc, $out, $err) = run_as($late, 'ag_ops', undef,
		"SET appguard.confirmations = 2;\n"
		  . "SELECT appguard_normalize_host('loads.the.library.test') IS NOT NULL;\n"
		  . "SHOW appguard.confirmations;\n"
		  . "SELECT appguard_consent_info('hold-app') IS NOT NULL;");
	like($err, qr/WARNING:  42501: permission denied to set parameter "appguard.confirmations"/,
		'late: a SET before the load is refused when the library loads');
	is(join(',', split /\n/, $out), 't,3,t', 'late: ... the configured value stays in force, and nothing is refused')
	  or diag $err;
}
$late->stop;

# ---------------------------------------------------------------- preloaded
$env->tls_host('app.hold.test', addr => $addr, cert => 'app');
$env->reload;
my $early = start_node('early', $env, conf => $conf);
is($early->safe_psql('postgres', 'SHOW shared_preload_libraries'), 'appguard', 'early: appguard is preloaded');
setup($early);
{
	my ($rc, $out, $err) = run_as($early, 'ag_ops', $hostile, 'SELECT 1');
	isnt($rc, 0, 'early: the PGOPTIONS connection is refused');
	like($err, qr/FATAL:  permission denied to set parameter "appguard.confirmations"/,
		'early: ... because a non-superuser may not set appguard.confirmations');
}
{
	my ($rc, $out, $err) = run_as($early, 'ag_ops', undef, <<'SQL');
SELECT current_setting('appguard.confirmations') || ' ' || current_setting('appguard.error_uri_template');
SET appguard.confirmations = 2;
SQL
	is((split /\n/, $out)[0], '3 https://auth.hold.test/why/{suspension_id}', 'early: the configured values');
	like($err, qr/ERROR:  42501: permission denied to set parameter "appguard.confirmations"/,
		'early: SET appguard.confirmations is refused with 42501');
}
# the deadlines decide whether a stored snapshot fails: superuser-only
for my $s (qw(dns_timeout_ms timeout_ms connect_timeout_ms))
{
	my ($rc, $out, $err) = run_as($early, 'ag_ops', undef, "SET appguard.$s = 50;");
	like($err, qr/ERROR:  42501: permission denied to set parameter "appguard.$s"/,
		"early: a non-superuser cannot SET appguard.$s");
	($rc, $out, $err) = run_as($early, 'ag_ops', "-c appguard.$s=50", 'SELECT 1');
	like($err, qr/FATAL:  permission denied to set parameter "appguard.$s"/,
		"early: nor give appguard.$s in its connection options");
}
{
	my ($rc, $out, $err) = run_as($early, 'ag_ops', undef,
		"SELECT f->>'status' FROM appguard_snapshot('app.hold.test', $port) f");
	is($out, 'ok', 'early: a plain session of the role measures') or diag $err;
}
# A consent by the role whose baseline is too old measures live: the
# helper (appguard.live_snapshot) sets appguard.timeout_ms for its probe,
# which it may because it runs as the extension's owner
$early->safe_psql('postgres', 'ALTER ROLE ag_ops SET appguard.baseline_max_age = 0');
{
	my $before = snapshots($early);
	my ($rc, $out, $err) = run_as($early, 'ag_ops', undef, <<'SQL');
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('t2', 'hold-app', 'patient-2');
SELECT baseline_snapshot_id IS NOT NULL FROM appguard.grant_states
WHERE token_table = 'appguard.refresh_tokens'::regclass AND token_key = 't2';
SQL
	is($out, 't', 'early: a consent as the role takes a baseline') or diag $err;
	is(snapshots($early), $before + 1, 'early: ... measured live');
	is($early->safe_psql('postgres', q{SELECT count(*) FROM appguard.events WHERE kind = 'live_snapshot_failed'}),
		'0', 'early: ... without a failed live snapshot');
}

# An invalid value in the configuration file: the server starts, logs it,
# and appguard refuses to measure with the built-in default in its place
# (here the system's resolvers instead of the configured ones)
$early->append_conf('postgresql.conf', "appguard.dns_servers = '127.0.0.1:99999'\n");
$early->restart;
like(slurp_file($early->logfile),
	qr/WARNING:  invalid value for parameter "appguard.dns_servers": "127.0.0.1:99999"/,
	'early: an invalid appguard.dns_servers in postgresql.conf is logged at start');
{
	# (no port allowed: were it not refused, the probe would stop before DNS,
	# which would go to the machine's resolvers)
	my ($rc, $out, $err) = run_as($early, 'postgres', undef,
		"SET appguard.allowed_ports = '';\nSELECT f->>'status' FROM appguard_snapshot('app.hold.test', $port) f");
	like($err, qr/ERROR:  55000: .*lost their configured values: appguard\.dns_servers$/m,
		'early: ... and appguard refuses to measure without it (55000), naming the setting');
}
$early->stop;

done_testing();
