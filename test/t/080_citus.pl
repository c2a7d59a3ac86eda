# appguard beside Citus (13.2.2, built from the vendored source by
# test/citus/build.sh): a coordinator and two workers on Unix sockets, with
# Citus and appguard preloaded on each.  appguard does not guard Citus
# tables yet (docs/citus.md), and must never guard them by halves:
#   - CREATE EXTENSION on the coordinator reaches the workers;
#   - appguard_protect refuses a distributed and a reference table, and
#     leaves no trigger and no record behind;
#   - a protected table with rows cannot be distributed (its copy into the
#     shards fails at the shards' consent trigger), and stays local,
#     protected and guarded;
#   - an empty protected table that Citus distributes anyway (unsafe
#     triggers on) refuses every INSERT: no token gets in unguarded;
#   - with Citus's default settings, distributing a protected table is
#     refused by Citus itself;
#   - appguard's own tables cannot be made Citus tables (distributed,
#     reference, Citus local): refused, with no shard left on any node;
#   - nor can a protected table be made a Citus local table (by hand, or
#     by a foreign key to a reference table) or a reference table: refused
#     on the coordinator, the table left local, protected and guarded;
#   - a local protected table on the coordinator is guarded as usual.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $libdir = `pg_config --pkglibdir`;
chomp $libdir;
plan skip_all => 'Citus is not installed (test/citus/build.sh builds it from the vendored source)'
  unless -f "$libdir/citus.so";

my @nodes;
for my $name (qw(coordinator worker1 worker2))
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', <<'EOC');
shared_preload_libraries = 'citus, appguard'
max_prepared_transactions = 20
EOC
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	push @nodes, $node;
}
my ($coord, @workers) = @nodes;
$coord->safe_psql('postgres',
	"SELECT citus_set_coordinator_host('" . $coord->host . "', " . $coord->port . ')');
$coord->safe_psql('postgres',
	"SELECT citus_add_node('" . $_->host . "', " . $_->port . ')')
  for @workers;
is($coord->safe_psql('postgres', 'SELECT count(*) FROM citus_get_active_worker_nodes()'),
	'2', 'a coordinator with two active workers');

$coord->safe_psql('postgres', 'CREATE EXTENSION appguard');
for my $i (0 .. 1)
{
	is( $workers[$i]->safe_psql('postgres',
			"SELECT extversion FROM pg_extension WHERE extname = 'appguard'"),
		$coord->safe_psql('postgres',
			"SELECT extversion FROM pg_extension WHERE extname = 'appguard'"),
		"CREATE EXTENSION appguard reached worker " . ($i + 1));
}

my $table = q{(token_id text PRIMARY KEY, client_id text NOT NULL, subject text NOT NULL,
	status text NOT NULL DEFAULT 'active', error_uri text)};
my $protect = q{SELECT appguard_protect('%s', 'client_id', 'status', 'error_uri',
	subject_column => 'subject') IS NOT NULL};

# What a table carries of appguard: its triggers and its record.
sub appguard_traces
{
	my ($tbl) = @_;
	return $coord->safe_psql('postgres', qq{
		SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = '$tbl'::regclass
				AND tgname LIKE 'appguard%'),
			   (SELECT count(*) FROM appguard.protected_tables WHERE tbl = '$tbl'::regclass)});
}

# ---------------------------------------------------------------- Citus tables are refused
$coord->safe_psql('postgres',
	"CREATE TABLE t_dist $table; SELECT create_distributed_table('t_dist', 'token_id')");
my ($rc, $out, $err) = $coord->psql('postgres', sprintf($protect, 't_dist'),
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($rc, 0, 'appguard_protect refuses a distributed table');
like($err, qr/0A000: public\.t_dist is a Citus table/, '... with 0A000, naming it a Citus table');
like($err, qr/DETAIL:.*shards.*guard nothing/s, '... and saying why');
is(appguard_traces('t_dist'), '0|0', '... leaving no trigger and no record');

$coord->safe_psql('postgres',
	"CREATE TABLE t_ref $table; SELECT create_reference_table('t_ref')");
($rc, $out, $err) = $coord->psql('postgres', sprintf($protect, 't_ref'),
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($rc, 0, 'appguard_protect refuses a reference table');
like($err, qr/0A000: public\.t_ref is a Citus table/, '... with 0A000');
is(appguard_traces('t_ref'), '0|0', '... leaving no trigger and no record');

# ---------------------------------------------------------------- appguard's own tables stay local
# Citus would make appguard's tables Citus tables by creating their shards
# (<table>_<shard id>) in schema appguard; appguard's event trigger refuses
# that on the node that makes the shard, and Citus aborts the command on
# every node (an extension's table that Citus took could not be given back).
my @own = (
	[ 'distributing appguard.consents by client',
		"SELECT create_distributed_table('appguard.consents', 'client_id', colocate_with => 't_dist')",
		'consents' ],
	[ 'making appguard.grants a reference table',
		"SELECT create_reference_table('appguard.grants')", 'grants' ],
	[ 'adding appguard.protected_tables to Citus\'s metadata',
		"SELECT citus_add_local_table_to_metadata('appguard.protected_tables')",
		'protected_tables' ]);
for my $case (@own)
{
	my ($what, $sql, $tbl) = @$case;
	($rc, $out, $err) = $coord->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	isnt($rc, 0, "$what is refused");
	like($err,
		qr/0A000: appguard\.${tbl}_\d+ would be a Citus shard of an appguard table/,
		'... with 0A000, naming the shard');
}
is( $coord->safe_psql('postgres', q{
		SELECT count(*) FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
		WHERE c.relnamespace = 'appguard'::regnamespace}),
	'0', '... and no appguard table is a Citus table');
for my $node (@nodes)
{
	is( $node->safe_psql('postgres', q{
			SET citus.override_table_visibility = off;
			SELECT count(*) FROM pg_class
			WHERE relnamespace = 'appguard'::regnamespace AND relname ~ '_[0-9]+$'}),
		'0', '... no shard of one is left on the ' . $node->name);
}

# ---------------------------------------------------------------- a protected table stays local
$coord->safe_psql('postgres',
	"CREATE TABLE t_local $table; " . sprintf($protect, 't_local')
	  . "; INSERT INTO t_local VALUES ('tok-1', 'app-1', 'alice')");
is( $coord->safe_psql('postgres',
		"SELECT state FROM appguard.grant_states WHERE token_table = 't_local'::regclass AND token_key = 'tok-1'"),
	'active',
	'a local protected table on the coordinator: a new token is a grant');

($rc, $out, $err) = $coord->psql('postgres',
	"SELECT create_distributed_table('t_local', 'token_id')");
isnt($rc, 0, 'with Citus\'s default settings, distributing a protected table fails');
like($err, qr/trigger/i, '... on its triggers');

($rc, $out, $err) = $coord->psql('postgres',
	"SET citus.enable_unsafe_triggers = on; SELECT create_distributed_table('t_local', 'token_id')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($rc, 0, 'with unsafe triggers on, distributing a protected table with rows fails');
# (Citus reports the shard's error of a copy as XX000, keeping the message)
like($err, qr/ERROR:  [0-9A-Z]{5}: table "t_local_\d+" fires appguard's consent trigger but is not protected by appguard/,
	'... at the first row copied into a shard');
is( $coord->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 't_local'::regclass)
			|| '|' || (SELECT count(*) FROM t_local)
			|| '|' || (SELECT string_agg(state, ',') FROM appguard.grant_states
					   WHERE token_table = 't_local'::regclass)}),
	'0|1|active', '... and the table stays local, with its row and its grant');
is(appguard_traces('t_local'), '5|1', '... still protected');
$coord->safe_psql('postgres', "INSERT INTO t_local VALUES ('tok-2', 'app-1', 'bob')");
is( $coord->safe_psql('postgres',
		"SELECT count(*) FROM appguard.grant_states WHERE token_table = 't_local'::regclass"),
	'2', '... and guarded: the next token is a grant too');

# ---------------------------------------------------------------- nor a Citus table on the coordinator
# Citus makes a Citus local table by renaming the table to its shard's name
# (also when a foreign key to a reference table converts it), and a
# reference table by creating a shard on the coordinator too: appguard's
# event trigger refuses both on the coordinator, and Citus aborts.
$coord->safe_psql('postgres',
	"CREATE TABLE apps (client_id text PRIMARY KEY); SELECT create_reference_table('apps');"
	  . " INSERT INTO apps VALUES ('app-1')");
my @coord_cases = (
	[ 'citus_add_local_table_to_metadata of a protected table',
		"SELECT citus_add_local_table_to_metadata('t_local')",
		qr/DETAIL:  Citus is renaming it to public\.t_local_\d+, its shard/ ],
	[ 'a foreign key from a protected table to a reference table (Citus converts it)',
		'ALTER TABLE t_local ADD CONSTRAINT t_local_app FOREIGN KEY (client_id) REFERENCES apps (client_id)',
		qr/foreign key/ ],
	[ 'create_reference_table of a protected table, unsafe triggers on',
		"SET citus.enable_unsafe_triggers = on; SELECT create_reference_table('t_local')",
		qr/DETAIL:  Citus is making public\.t_local_\d+, a shard of it/ ]);
for my $case (@coord_cases)
{
	my ($what, $sql, $detail) = @$case;
	($rc, $out, $err) = $coord->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	isnt($rc, 0, "$what is refused");
	like($err, qr/ERROR:  0A000: protected table public\.t_local would become a Citus table/,
		'... with 0A000, naming the table');
	like($err, $detail, '... saying what Citus was doing');
}
is( $coord->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 't_local'::regclass)
			|| '|' || (SELECT count(*) FROM pg_class WHERE relname ~ '^t_local_[0-9]+$')
			|| '|' || (SELECT count(*) FROM pg_constraint WHERE conname = 't_local_app')}),
	'0|0|0', '... and the table stays local, with no shard and no foreign key');
is(appguard_traces('t_local'), '5|1', '... still protected');
$coord->safe_psql('postgres', "INSERT INTO t_local VALUES ('tok-4', 'app-1', 'dave')");
is( $coord->safe_psql('postgres',
		"SELECT count(*) FROM appguard.grant_states WHERE token_table = 't_local'::regclass"),
	'3', '... and guarded');
$coord->safe_psql('postgres',
	'ALTER TABLE t_local RENAME TO t_local_2024; ALTER TABLE t_local_2024 RENAME TO t_local');
pass('a protected table may still be renamed to a name ending in digits that are no shard id');

# ---------------------------------------------------------------- distributed anyway: no token gets in
$coord->safe_psql('postgres',
	"CREATE TABLE t_late $table; " . sprintf($protect, 't_late')
	  . "; SET citus.enable_unsafe_triggers = on; SELECT create_distributed_table('t_late', 'token_id')");
is( $coord->safe_psql('postgres',
		"SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 't_late'::regclass"),
	'1', 'an empty protected table can be distributed with unsafe triggers on');
($rc, $out, $err) = $coord->psql('postgres',
	"SET citus.enable_unsafe_triggers = on; INSERT INTO t_late VALUES ('tok-3', 'app-1', 'carol')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($rc, 0, '... but a token INSERT into it fails');
like($err, qr/55000: table "t_late_\d+" fires appguard's consent trigger/,
	'... at the shard\'s consent trigger, on the worker');
like($err, qr/HINT:.*appguard_protect_insert/s, '... with a hint');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM t_late'),
	'0', '... and no unguarded token is left in it');

$_->stop for reverse @nodes;
done_testing();
