package AppGuard::TestNode;

# A PostgreSQL::Test::Cluster set up for appguard against an
# AppGuard::TestEnv, and the one way the TAP tests measure a host through it.
#
#   my $node = AppGuard::TestNode::start_node('name', $env);
#   my $facts = AppGuard::TestNode::probe($node, $host, port => 8443,
#       store => 1, set => { timeout_ms => 1500 });
#
# probe() returns the facts document as a Perl hash; in list context also
# the seconds the call took as the client saw them.

use strict;
use warnings;

use Exporter 'import';
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use Time::HiRes qw(time);

our @EXPORT_OK = qw(start_node probe sql_literal backend_fds create_wait_until_idle);

my $json = JSON::PP->new->canonical;

sub sql_literal { return q{'} . ($_[0] =~ s/'/''/gr) . q{'} }

# A started cluster with the env's appguard settings and the extension;
# appguard is preloaded unless preload => 0.
sub start_node
{
	my ($name, $env, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		$env->postgresql_conf(preload => $opts{preload} // 1));
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION appguard');
	return $node;
}

# appguard_probe (or appguard_snapshot with store => 1) of one host, with
# session settings from set => { name => value } (without "appguard.").
sub probe
{
	my ($node, $host, %o) = @_;
	my $fn = $o{store} ? 'appguard_snapshot' : 'appguard_probe';
	my $set = join '',
	  map { "SET appguard.$_ = " . sql_literal($o{set}{$_}) . ";\n" }
	  sort keys %{ $o{set} // {} };
	my $start = time;
	my $out = $node->safe_psql('postgres',
		"${set}SELECT $fn(" . sql_literal($host) . ', ' . ($o{port} // 443) . ')');
	my $facts = $json->decode($out);
	return wantarray ? ($facts, time - $start) : $facts;
}

# A backend's open descriptors, as "fd -> target" lines, without the
# relation files PostgreSQL's own file cache opens and keeps as it likes.
sub backend_fds
{
	my ($node, $pid) = @_;
	my $pgdata = $node->data_dir;
	opendir(my $dh, "/proc/$pid/fd") or die "cannot read /proc/$pid/fd: $!";
	my @fds = sort { $a <=> $b } grep { !/^\./ } readdir($dh);
	closedir($dh);
	return grep { !m{ -> \Q$pgdata\E/} }
	  map { "$_ -> " . (readlink("/proc/$pid/fd/$_") // '?') } @fds;
}

# wait_until_idle(target pid, since) in the node's postgres database: how
# long after "since" backend target stops being active, in ms, measured
# inside the server so that psql start-up is not counted.
sub create_wait_until_idle
{
	my ($node) = @_;
	$node->safe_psql(
		'postgres', q{
CREATE FUNCTION wait_until_idle(target int, since timestamptz) RETURNS float8
LANGUAGE plpgsql AS $$
BEGIN
	LOOP
		PERFORM pg_stat_clear_snapshot();
		IF NOT EXISTS (SELECT FROM pg_stat_activity
					   WHERE pid = target AND state = 'active') THEN
			RETURN extract(epoch FROM clock_timestamp() - since) * 1000;
		END IF;
		PERFORM pg_sleep(0.002);
	END LOOP;
END
$$;
});
	return;
}

1;
