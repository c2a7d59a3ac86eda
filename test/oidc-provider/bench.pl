#!/usr/bin/perl
# node-oidc-provider's token endpoint with appguard vs without, side by
# side in one run (test/bench/oidc.sh runs it).
#
#   bench.pl --pghost DIR --pgport PORT [--requests 300]
#
# Four example servers (server.js), configured alike, each with its own
# database in the same cluster: "plain" (port 4601, "appguard": false: the
# table is not protected, the token endpoint asks nothing, no client is
# registered), "control" (port 4604, a second plain one: plain/control is
# the harness's own spread, what two identical servers measure apart),
# "table" (port 4603: protect.sql and the client registered and measured,
# the token endpoint unchanged) and "guarded" (port 4602: the same with the
# refresh check in the token endpoint: the example as shipped).  bench.js
# alternates between them request by request and times, at the client, the
# code exchange (PKCE; inserts a refresh token row) and a refresh
# (rotation: the old row is consumed, a new one inserted).  Prints the
# medians and the ratios, and each server's database backends' CPU time
# an iteration (/proc/PID/stat; an iteration is a login, a consent screen,
# a code exchange and a refresh, the 20 warm-up ones included).  Asserts
# nothing but that every request succeeded.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin", "$FindBin::RealBin/../perl";

use Getopt::Long;
use IPC::Run ();
use JSON::PP ();

use AppGuard::OidcProvider;
use AppGuard::TestEnv;

my %o = (requests => 300);
GetOptions(\%o, 'pghost=s', 'pgport=i', 'requests=i') or die "bad options\n";
die "--pghost and --pgport are required\n" unless $o{pghost} && $o{pgport};
$| = 1;

sub psql
{
	my ($db, $sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-h', $o{pghost}, '-p', $o{pgport},
			'-d', $db, '-f', '-' ], '<', \$sql, '>', \$out, '2>', \$err)
	  or die "psql: $err";
	chomp $out;
	return $out;
}

AppGuard::OidcProvider::node_modules_current()
  or die "test/oidc-provider/node_modules is missing or older than its package-lock.json: run test/install-deps.sh (npm ci)\n";

my $env  = AppGuard::TestEnv->new;
my $host = 'app.example.test';
$env->cert('app', san => [$host], policies => ['OV'], o => 'Example Health, Inc.', c => 'US');
my $addr = $env->tls_host($host, cert => 'app');
$env->zone('example.test', [ "app A $addr", '@ TXT "appguard-client-id=app1"' ]);
$env->start;
my $redirect = "https://$host:" . $env->tls_port . '/cb';

my $settings = join '', map {
	my ($k, $v) = /^(\S+) = (.*)$/;
	"ALTER SYSTEM SET $k = $v;\n"
} split /\n/, $env->postgresql_conf(preload => 0);
psql('postgres', "LOAD 'appguard';\n${settings}SELECT pg_reload_conf();");

my %srv;
my %port = (plain => 4601, guarded => 4602, table => 4603, control => 4604);
my @modes = qw(plain control table guarded);
for my $mode (@modes)
{
	my $s = AppGuard::OidcProvider->new(env => $env, psql => \&psql, pghost => $o{pghost},
		pgport => $o{pgport}, db => "oidc_$mode", role => "oidc_$mode",
		port => $port{$mode}, appguard => $mode !~ /^(plain|control)$/, refresh_check => $mode eq 'guarded',
		accounts => { patient1 => { password => 'patient-pw-1', name => 'Pat Patient' } },
		clients => [ { client_id => 'app1', client_name => 'Example App', redirect_uris => [$redirect] } ]);
	$s->create_database;
	$s->start;
	$srv{$mode} = $s;
}
for my $mode (qw(guarded table))
{
	my $snap = $srv{$mode}->sql("SELECT appguard_snapshot('$host', " . $env->tls_port . ") ->> 'status'");
	die "snapshot of $host: $snap\n" unless $snap eq 'ok';
}

my $job = JSON::PP->new->encode({
	servers => { map { $_ => $srv{$_}->base } keys %srv },
	client_id => 'app1', redirect_uri => $redirect, username => 'patient1', password => 'patient-pw-1',
	requests => $o{requests} });
my ($out, $err) = ('', '');
IPC::Run::run([ $AppGuard::OidcProvider::NODE, "$AppGuard::OidcProvider::DIR/bench.js", $job ],
	'>', \$out, '2>', \$err) or die "bench.js: $err";
my $r = JSON::PP->new->decode($out);

# CPU time of each server's database backends (the server's pool), from
# /proc/PID/stat: utime + stime, in clock ticks
my $tick_ms = 1000 / (`getconf CLK_TCK` || 100);
my %cpu_ms;
for my $mode (@modes)
{
	my $pids = $srv{$mode}->sql(q{SELECT string_agg(pid::text, ' ') FROM pg_catalog.pg_stat_activity
		WHERE datname = pg_catalog.current_database() AND pid <> pg_catalog.pg_backend_pid()});
	for my $pid (split ' ', $pids)
	{
		open my $fh, '<', "/proc/$pid/stat" or next;
		my ($stat) = <$fh>;
		my @f = split ' ', ($stat =~ s/^.*\) //r);	# after "(comm) ": field 3 onwards
		$cpu_ms{$mode} += ($f[11] + $f[12]) * $tick_ms;
	}
}
# The same writes at the SQL level, to split what a rotation costs: the
# new row's INSERT (appguard's insert trigger: the token joins the
# patient's consent) and the old row's UPDATE of its status (appguard's
# status trigger), timed by pgbench in the plain and the guarded database,
# alternately, 3 rounds of 3 s each.
my %sql_ms;
my %scripts = (
	insert => "\\set g random(1, 2000000000)\n"
	  . "INSERT INTO oidc_refresh_tokens (id, client_id, account_id, grant_id, payload) "
	  . "VALUES ('b' || :g || '-' || :client_id, 'app1', 'patient1', 'bench', '{}') ON CONFLICT DO NOTHING;\n",
	rotation => "\\set g random(1, 2000000000)\n"
	  . "INSERT INTO oidc_refresh_tokens (id, client_id, account_id, grant_id, payload) "
	  . "VALUES ('r' || :g || '-' || :client_id, 'app1', 'patient1', 'bench', '{}') ON CONFLICT DO NOTHING;\n"
	  . "UPDATE oidc_refresh_tokens SET status = 'consumed' WHERE id = 'r' || :g || '-' || :client_id AND status = 'active';\n");
for my $kind (sort keys %scripts)
{
	my $file = "$ENV{TMPDIR}/$kind.sql";
	open my $fh, '>', $file or die $!;
	print $fh $scripts{$kind};
	close $fh;
	for my $round (1 .. 3)
	{
		for my $mode (qw(plain guarded))
		{
			my ($out, $err) = ('', '');
			IPC::Run::run([ 'pgbench', '-n', '-T', 3, '-h', $o{pghost}, '-p', $o{pgport}, '-U', "oidc_$mode",
					'-f', $file, "oidc_$mode" ], '>', \$out, '2>', \$err) or die "pgbench: $err";
			my ($lat) = $out =~ /latency average = ([\d.]+) ms/ or die "pgbench: $out";
			push @{ $sql_ms{$kind}{$mode} }, $lat;
		}
	}
}

my $rows = $srv{guarded}->sql(q{SELECT count(*) FROM oidc_refresh_tokens});
my $baselined = $srv{guarded}->sql(q{SELECT count(*) FROM appguard.grants
	WHERE token_table = 'oidc_refresh_tokens'::regclass AND baseline_snapshot_id IS NOT NULL});
$_->stop for values %srv;
$env->stop;

printf "\nnode-oidc-provider token endpoint, %d requests per server and kind, interleaved, %.0f s, %d failures\n",
  $r->{requests}, $r->{seconds}, $r->{failures};
printf "guarded table at the end: %d refresh token rows, %d with a baseline\n", $rows, $baselined;
printf "%-34s %9s %11s %9s %11s %14s %12s %14s\n", 'request (median)', 'plain ms', 'control ms',
  'table ms', 'guarded ms', 'plain/control', 'plain/table', 'plain/guarded';
for my $kind (qw(refresh code))
{
	my ($p, $c, $t, $g) = map { $r->{median_ms}{$_}{$kind} } qw(plain control table guarded);
	printf "%-34s %9.2f %11.2f %9.2f %11.2f %14.3f %12.3f %14.3f\n",
	  $kind eq 'refresh' ? 'grant_type=refresh_token (rotates)' : 'grant_type=authorization_code',
	  $p, $c, $t, $g, $c ? $p / $c : 0, $t ? $p / $t : 0, $g ? $p / $g : 0;
}
my $iterations = $r->{requests} + 20;
printf "%-34s %9.2f %11.2f %9.2f %11.2f %14.3f %12.3f %14.3f\n", 'database CPU an iteration',
  map({ ($cpu_ms{$_} // 0) / $iterations } qw(plain control table guarded)),
  map({ $cpu_ms{$_} ? $cpu_ms{plain} / $cpu_ms{$_} : 0 } qw(control table guarded));
sub median3 { my @s = sort { $a <=> $b } @_; return $s[ $#s / 2 ] }
printf "\nthe same writes in SQL (pgbench, one client, 3 rounds of 3 s, median latency)\n";
printf "%-34s %9s %11s %14s\n", 'statement(s)', 'plain ms', 'guarded ms', 'plain/guarded';
for my $kind (qw(insert rotation))
{
	my ($p, $g) = map { median3(@{ $sql_ms{$kind}{$_} }) } qw(plain guarded);
	printf "%-34s %9.3f %11.3f %14.3f\n",
	  $kind eq 'insert' ? 'INSERT of a new token' : 'rotation: INSERT + UPDATE status', $p, $g, $p / $g;
}
print "plain, control: no appguard (plain/control: the harness's spread between two identical servers);\n"
  . "table: the token table protected, the token endpoint unchanged;\n"
  . "guarded: protected and the refresh check in the token endpoint (the example as shipped).\n"
  . "A ratio is the speed relative to plain (plain ms / other ms); the goal for the refresh is >= 0.95.\n";
exit($r->{failures} ? 1 : 0);
