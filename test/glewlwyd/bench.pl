#!/usr/bin/perl
# Glewlwyd's token endpoint with gpo_refresh_token protected by appguard
# vs unprotected, side by side in one run (test/bench/glewlwyd.sh runs it).
#
#   bench.pl --pghost DIR --pgport PORT [--requests 300]
#
# Two Glewlwyd instances, configured alike, each with its own database in
# the same cluster: "plain" (port 4593) leaves its table alone, "guarded"
# (port 4594) has it protected by appguard, with the client registered and
# measured.  Requests alternate between the two, one by one, the order
# swapped every iteration, so the load of a shared machine falls on both
# alike.  Each iteration times, at the client, one refresh
# (grant_type=refresh_token: appguard's triggers do not fire, Glewlwyd's
# refresh writes neither the status nor the key column) and one code
# exchange (grant_type=authorization_code: Glewlwyd inserts a refresh
# token row, whose insert trigger takes the client's cached snapshot as
# its baseline) on each instance; the authorization request that makes
# each code is not timed.  Prints the medians and the ratios guarded /
# plain.  Asserts nothing but that every request succeeded.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin", "$FindBin::RealBin/../perl";

use Getopt::Long;
use IPC::Run ();
use Time::HiRes qw(time);

use AppGuard::Glewlwyd;
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

# ---------------------------------------------------------------- the app
my $env  = AppGuard::TestEnv->new;
my $host = 'app.example.test';
$env->cert('app', san => [$host], policies => ['OV'], o => 'Example Health, Inc.', c => 'US');
my $addr = $env->tls_host($host, cert => 'app');
$env->zone('example.test', [ "app A $addr", '@ TXT "appguard-client-id=app1"' ]);
$env->start;
my $redirect = "https://$host:" . $env->tls_port . '/cb';

# the env's appguard settings for the whole cluster (LOAD first: ALTER
# SYSTEM knows appguard's settings once the library is loaded)
my $settings = join '', map {
	my ($k, $v) = /^(\S+) = (.*)$/;
	"ALTER SYSTEM SET $k = $v;\n"
} split /\n/, $env->postgresql_conf(preload => 0);
psql('postgres', "LOAD 'appguard';\n${settings}SELECT pg_reload_conf();");

# ---------------------------------------------------------------- two Glewlwyds
my %g;
my %state;
for my $mode (qw(plain guarded))
{
	my $g = AppGuard::Glewlwyd->new(env => $env, psql => \&psql,
		pghost => $o{pghost}, pgport => $o{pgport},
		port => $mode eq 'plain' ? 4593 : 4594, db => "glw_$mode", role => "glw_$mode");
	$g->create_database;
	$g->start;
	$g->configure(username => 'patient1', password => 'patient-pw-1');
	$g->add_client(client_id => 'app1', name => 'Example App', secret => 'app1-secret',
		redirect_uri => $redirect);
	if ($mode eq 'guarded')
	{
		$g->sql("SELECT appguard_register_client('app1', 'Example App', ARRAY['$redirect'])");
		$g->sql(q{SELECT appguard_protect('gpo_refresh_token', 'gpor_client_id', 'gpor_enabled', NULL, '1', '0')});
		my $snap = $g->sql("SELECT appguard_snapshot('$host', " . $env->tls_port . ") ->> 'status'");
		die "snapshot of $host: $snap\n" unless $snap eq 'ok';
	}
	my $cookie = $g->login('patient1', 'patient-pw-1');
	my $first = $g->consent_and_token($cookie, 'app1');
	die "$mode: first token: $first->{status} $first->{body}\n" unless $first->{status} == 200;
	$g{$mode} = $g;
	$state{$mode} = { cookie => $cookie, rt => $first->{token}{refresh_token} };
}

# ---------------------------------------------------------------- measuring
my %t = map { $_ => { refresh => [], code => [] } } qw(plain guarded);
my $failures = 0;

sub one
{
	my ($mode, $record) = @_;
	my ($g, $s) = ($g{$mode}, $state{$mode});
	my ($status, undef, $took) = $g->refresh('app1', $s->{rt});
	$failures++ unless $status == 200;
	push @{ $t{$mode}{refresh} }, $took if $record;
	my $r = $g->consent_and_token($s->{cookie}, 'app1');
	$failures++ unless $r->{status} == 200;
	push @{ $t{$mode}{code} }, $r->{seconds} if $record;
	return;
}

sub median
{
	my @s = sort { $a <=> $b } @_;
	return 0 unless @s;
	return @s % 2 ? $s[ $#s / 2 ] : ($s[ @s / 2 - 1 ] + $s[ @s / 2 ]) / 2;
}

my $t0 = time;
one($_, 0) for (qw(plain guarded)) x 10;    # warm-up
for my $i (1 .. $o{requests})
{
	one($_, 1) for $i % 2 ? qw(plain guarded) : qw(guarded plain);
	printf "%d of %d\n", $i, $o{requests} unless $i % 100;
}
my $rows = $g{guarded}->sql(q{SELECT count(*) FROM gpo_refresh_token});
my $baselined = $g{guarded}->sql(
	q{SELECT count(*) FROM appguard.grants
	  WHERE token_table = 'gpo_refresh_token'::regclass AND baseline_snapshot_id IS NOT NULL});
$_->stop for values %g;
$env->stop;

printf "\nGlewlwyd token endpoint, %d requests per instance and kind, interleaved, %.0f s, %d failures\n",
  $o{requests}, time - $t0, $failures;
printf "guarded table at the end: %d refresh token rows, %d with a baseline\n", $rows, $baselined;
printf "%-32s %10s %12s %8s\n", 'request (median)', 'plain ms', 'guarded ms', 'ratio';
for my $kind (qw(refresh code))
{
	my $u = median(@{ $t{plain}{$kind} }) * 1000;
	my $p = median(@{ $t{guarded}{$kind} }) * 1000;
	printf "%-32s %10.2f %12.2f %8.3f\n",
	  $kind eq 'refresh' ? 'grant_type=refresh_token' : 'grant_type=authorization_code',
	  $u, $p, $u ? $p / $u : 0;
}
exit($failures ? 1 : 0);
