# Installing appguard: right after CREATE EXTENSION, with PostgreSQL's
# default search_path, the API answers to the design card's names
# (appguard_snapshot, appguard_drifted, ...) and nothing internal is
# reachable that way; CREATE EXTENSION appguard SCHEMA x puts the API in x,
# and appguard's own calls between its functions follow it there; DROP
# EXTENSION removes schema appguard and the API, and keeps the roles.  No
# network: snapshots are stored as appguard_snapshot stores them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AppGuard::TestEnv;

my $env  = AppGuard::TestEnv->new;
my $node = PostgreSQL::Test::Cluster->new('install');
$node->init;
$node->append_conf('postgresql.conf', $env->postgresql_conf(preload => 1));
$node->start;

sub run
{
	my ($db, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, $sql);
	return $rc == 0 ? $out : "ERROR: $err";
}

# A successful snapshot of host, stored as appguard_snapshot stores it
sub snapshot_sql
{
	my ($host, $org) = @_;
	return <<"SQL";
INSERT INTO appguard.snapshots (host, port, taken_at, status, facts)
VALUES ('$host', 443, clock_timestamp(), 'ok', jsonb_build_object(
	'schema', 1, 'host', '$host', 'port', 443, 'status', 'ok',
	'dns', jsonb_build_object('rcode', 'NOERROR', 'a', '["192.0.2.1"]'::jsonb,
							  'ownership_ids', '[]'::jsonb, 'registrable_domain', 'install.test'),
	'tls', jsonb_build_object('verified', true, 'version', 'TLSv1.3',
		'leaf', jsonb_build_object('validation', 'OV',
			'subject', jsonb_build_object('O', '$org', 'C', 'US')))));
SQL
}

# ---- the default: the API in public, everything else in schema appguard
$node->safe_psql('postgres', 'CREATE DATABASE plain');
is(run('plain', 'CREATE EXTENSION appguard; SHOW search_path'), '"$user", public',
	'created with the default search_path');
is(run('plain', q{SELECT appguard_normalize_host('App.Example.ORG.')}), 'app.example.org',
	'appguard_normalize_host(host) by its name');
is(run('plain', q{SELECT appguard_address_class('127.0.0.1')}), 'loopback',
	'appguard_address_class by its name');
is(run('plain', q{SELECT pg_typeof(appguard_drifted('nobody'))::text}) =~ /client "nobody" is not registered/ ? 'ok' : 'no',
	'ok', 'appguard_drifted(client_id) by its name (and its clear error)');
is(run('plain', q{SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
				  AND proname LIKE 'appguard\_%'}),
	run('plain', q{SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid
				  AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
				  WHERE p.pronamespace = 'public'::regnamespace}),
	'every routine of the extension in public is an appguard_ API routine');
like(run('plain', q{SELECT setting('appguard.confirmations')}), qr/function setting\(unknown\) does not exist/,
	'internal functions are not reachable through the default search_path');
is(run('plain', q{SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace}), '0',
	'no table or view of appguard in public');
like(run('plain', 'CALL appguard_sweep(NULL, NULL)'), qr/max_age must be an interval/,
	'CALL appguard_sweep(...) by its name');

# ---- CREATE EXTENSION appguard SCHEMA api
$node->safe_psql('postgres', 'CREATE DATABASE chosen');
run('chosen', 'CREATE SCHEMA api; CREATE EXTENSION appguard SCHEMA api');
is(run('chosen', q{SELECT api.appguard_normalize_host('App.Example.ORG.')}), 'app.example.org',
	'SCHEMA api: the API is in api');
like(run('chosen', q{SELECT appguard_normalize_host('x.example.org')}), qr/does not exist/,
	'SCHEMA api: nothing of the API in public');
my $lifecycle = run('chosen', q{
SELECT api.appguard_register_client('app1', 'App One', ARRAY['https://app1.install.test/']) ->> 'host';
} . snapshot_sql('app1.install.test', 'Example Health, Inc.') . q{
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('t1', 'app1', 'pat');
SELECT api.appguard_check_refresh('t1') ->> 'allowed';
} . snapshot_sql('app1.install.test', 'Someone Else LLC') . q{
SELECT status FROM appguard.refresh_tokens WHERE token_id = 't1';
SELECT api.appguard_check_refresh('t1') -> 'error' ->> 'error';
SELECT api.appguard_explain(suspension_id) ->> 'app_name' FROM appguard.grant_states WHERE token_key = 't1';
});
is($lifecycle, "app1.install.test\ntrue\nsuspended\ninvalid_grant\nApp One",
	'SCHEMA api: consent, a drift, the suspension, the refusal and the explanation, through api');

# ---- DROP EXTENSION
is(run('chosen', q{DROP EXTENSION appguard;
				   SELECT count(*) FROM pg_namespace WHERE nspname = 'appguard';
				   SELECT count(*) FROM pg_proc WHERE pronamespace = 'api'::regnamespace;
				   SELECT count(*) FROM pg_roles WHERE rolname IN ('appguard_operator', 'appguard_auth_server')}),
	"0\n0\n2", 'DROP EXTENSION: schema appguard and the API gone, the roles kept');

# ---- a database that is not UTF8: refused before anything is created
# (the scripts are ASCII, so PostgreSQL reads them in any encoding, and the
# check at their top runs)
for my $enc (qw(LATIN1 SQL_ASCII EUC_JP))
{
	my $db = lc "enc_$enc";
	$node->safe_psql('postgres',
		"CREATE DATABASE $db ENCODING '$enc' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\nCREATE EXTENSION appguard");
	like($err, qr/ERROR:  0A000: appguard needs a UTF8 database; this one is $enc/,
		"a $enc database: CREATE EXTENSION refused with 0A000");
	is(run($db, q{SELECT count(*) FROM pg_namespace WHERE nspname = 'appguard'}), '0',
		"a $enc database: ... and nothing created");
}
my $top = $node->config_data('--sharedir') . '/extension';
for my $script (glob("$top/appguard--*.sql"))
{
	next if $script =~ /appguard--0\.1\.0\.sql$/;	# as released
	my $text = slurp_file($script);
	ok($text !~ /[^\x00-\x7f]/, "$script is ASCII")
	  or diag join(', ', map { sprintf 'line %d', $_ } grep { (split /\n/, $text)[$_ - 1] =~ /[^\x00-\x7f]/ } 1 .. (() = $text =~ /\n/g));
}

$node->stop;
done_testing();
