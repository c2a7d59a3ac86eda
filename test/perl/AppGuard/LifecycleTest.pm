package AppGuard::LifecycleTest;

# Helpers of the lifecycle TAP tests (test/t/03x_*.pl): a cluster set up
# for appguard against an AppGuard::TestEnv, and short ways to ask it
# about clients, tokens and suspensions.
#
#   my $lc = AppGuard::LifecycleTest->new('name', $env, conf => "...");
#   $lc->register('app1', 'App One', 'app1.example.test');
#   $lc->issue('tok1', 'app1');
#   my $t = $lc->token('tok1');             # the row and its grant, as a hash
#   my $r = $lc->json("SELECT appguard_check_refresh('tok1')");

use strict;
use warnings;

use Carp;
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use Time::HiRes qw(time sleep);

my $json = JSON::PP->new->canonical;

sub lit
{
	my ($v) = @_;
	return 'NULL' unless defined $v;
	return q{'} . ($v =~ s/'/''/gr) . q{'};
}

# A started cluster with the env's appguard settings and the extension.
sub new
{
	my ($class, $name, $env, %o) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', $env->postgresql_conf);
	# a live baseline must not miss its deadline on a busy test machine
	$node->append_conf('postgresql.conf', "appguard.baseline_timeout_ms = 3000\n");
	$node->append_conf('postgresql.conf', $o{conf}) if $o{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION appguard');
	return bless { node => $node, env => $env, port => $env->tls_port }, $class;
}

sub node { return $_[0]{node} }
sub port { return $_[0]{port} }

sub sql
{
	my ($self, $sql) = @_;
	return $self->{node}->safe_psql('postgres', $sql);
}

# The result of a query returning one jsonb (or json) value, decoded
sub json
{
	my ($self, $sql) = @_;
	my $out = $self->sql($sql);
	return undef if $out eq '';
	return $json->decode($out);
}

# Rows of a query, as a list of hashes
sub rows
{
	my ($self, $sql) = @_;
	my $r = $self->json("SELECT coalesce(json_agg(q), '[]') FROM ($sql) q");
	return @$r;
}

# Run SQL; returns (stdout, stderr) whatever happens
sub try
{
	my ($self, $sql) = @_;
	my ($out, $err) = ('', '');
	$self->{node}->psql('postgres', $sql, stdout => \$out, stderr => \$err,
		on_error_stop => 1);
	return ($out, $err);
}

sub register
{
	my ($self, $client, $name, $host, %o) = @_;
	my $port = $o{port} // $self->{port};
	return $self->json('SELECT appguard_register_client('
		  . lit($client) . ', ' . lit($name)
		  . ", ARRAY['https://$host:$port/callback'])");
}

# Insert tokens of a client into appguard.refresh_tokens (the consent path)
sub issue
{
	my ($self, $client, @tokens) = @_;
	$self->sql('INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES '
		  . join(', ', map { '(' . lit($_) . ', ' . lit($client) . ", 'patient-$_')" } @tokens));
	return;
}

# A token of appguard.refresh_tokens as a hash: its row, with appguard's
# state of its grant (appguard.grants) under the names the token table had
# before the one grant model: baseline_snapshot_id, suspension_id,
# suspended_at, reapproved_at.
sub token
{
	my ($self, $id) = @_;
	return $self->json('SELECT to_jsonb(t) || jsonb_build_object('
		  . q{'baseline_snapshot_id', g.baseline_snapshot_id, 'suspension_id', g.suspension_id, }
		  . q{'suspended_at', g.suspended_at, 'reapproved_at', g.reapproved_at) }
		  . 'FROM appguard.refresh_tokens t '
		  . q{LEFT JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass }
		  . 'AND g.token_key = t.token_id '
		  . 'WHERE t.token_id = ' . lit($id));
}

sub check_refresh
{
	my ($self, $id) = @_;
	return $self->json('SELECT appguard_check_refresh(' . lit($id) . ')');
}

# Suspensions of a client, oldest first
sub suspensions
{
	my ($self, $client) = @_;
	return $self->rows('SELECT * FROM appguard.suspensions WHERE client_id = '
		  . lit($client) . ' ORDER BY id');
}

# Measure hosts now (appguard_snapshot_many, so every snapshot is evaluated
# as it is stored) with session settings; returns { host => facts }.
# Asynchronous notifications psql printed are in $self->{notices}.
sub snapshot
{
	my ($self, $hosts, %o) = @_;
	my $set = join '', map { "SET $_ = " . lit($o{set}{$_}) . ";\n" } sort keys %{ $o{set} // {} };
	my $listen = join '', map { "LISTEN $_;\n" } @{ $o{listen} // [] };
	my $ports = join ', ', ($self->{port}) x @$hosts;
	my $out = $self->sql("$set$listen"
		  . 'SELECT jsonb_object_agg(f->>\'host\', f) FROM appguard_snapshot_many(ARRAY['
		  . join(', ', map { lit($_) } @$hosts) . "], ARRAY[$ports]) f");
	my @lines = split /\n/, $out;
	$self->{notifications} = [ grep { /^Asynchronous notification/ } @lines ];
	my ($doc) = grep { !/^Asynchronous notification/ } @lines;
	return $json->decode($doc);
}

sub notifications { return @{ $_[0]{notifications} // [] } }

# Wait until a query returns 't' (polls every 0.5 s); returns whether it did
sub poll
{
	my ($self, $sql, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	while (time < $deadline)
	{
		return 1 if $self->sql($sql) eq 't';
		sleep 0.5;
	}
	return 0;
}

1;
