# appguard guarding a real, unmodified auth server end to end: Glewlwyd
# 2.7.5 from Debian, PostgreSQL-backed in the test cluster with appguard in
# the same database, driven only through its HTTP API on a loopback
# address.  Its refresh tokens live in gpo_refresh_token with a 0/1
# gpor_enabled column and no error_uri column; appguard_protect guards
# that table as it is.
#
#   consent -> code -> token -> refresh 200
#   a certificate renewal with the same identity: refresh still 200
#   the certificate's organization changes -> sweep -> refresh 400 from
#   Glewlwyd -> appguard's error_uri and explanation (with "you were shown
#   X, it is now Y") -> appguard_reapprove -> refresh 200
#   a token Glewlwyd revoked stays refused after re-approval; Glewlwyd's
#   revocation of a token appguard suspended writes nothing (a limit of
#   such hosts), a write of the status column by the host counts; an
#   unregistered client's tokens are left alone
#   the app's DNS answers nothing: tokens are still issued promptly, their
#   baseline pending, and get it from the next successful snapshot
#   appguard_unprotect leaves Glewlwyd as it was
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../glewlwyd";

use JSON::PP ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AppGuard::Glewlwyd;
use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node);

plan skip_all => 'glewlwyd is not installed (test/install-deps.sh installs it)'
  unless -x $AppGuard::Glewlwyd::BINARY;

my $t0   = time;
my $json = JSON::PP->new->canonical;
my $env  = AppGuard::TestEnv->new;
my $port = $env->tls_port;

# ---------------------------------------------------------------- the app's servers
my $host = 'app.example.test';
my %identity = (o => 'Example Health, Inc.', l => 'Verona', st => 'Wisconsin', c => 'US');
$env->certs(
	'app-ov'      => { san => [$host], policies => ['OV'], %identity },
	# renewal: a new key and serial, the same organization and location
	'app-renewed' => { san => [$host], policies => ['OV'], %identity },
	'app-harvest' => {
		san => [$host], policies => ['OV'], key_of => 'app-renewed',
		o => 'Data Harvest Ltd', l => 'Road Town', c => 'VG'
	});
my $addr = $env->tls_host($host, cert => 'app-ov');
my @zone = ("app A $addr", '@ TXT "appguard-client-id=app1"');
$env->zone('example.test', \@zone);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- cluster and Glewlwyd
my $node = start_node('glewlwyd', $env);
my $glw = AppGuard::Glewlwyd->new(
	env    => $env,
	psql   => sub { my ($db, $sql) = @_; return $node->safe_psql($db, $sql) },
	pghost => $node->host,
	pgport => $node->port);
$glw->create_database;
$glw->start;
note sprintf 'glewlwyd up at %s in %.1f s', $glw->base, time - $t0;

sub sql { return $glw->sql($_[0]) }

sub jsql
{
	my $out = sql($_[0]);
	return $out eq '' ? undef : $json->decode($out);
}

# (stdout, stderr) of SQL that may fail
sub try_sql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql($glw->db, $sql, stdout => \$out, stderr => \$err, on_error_stop => 1);
	return ($out, $err);
}

sub row_of
{
	my ($id) = @_;
	return jsql("SELECT to_jsonb(g) FROM appguard.grant_states g "
		  . "WHERE g.token_table = 'gpo_refresh_token'::regclass AND g.token_key = '$id'");
}

sub enabled_of
{
	my ($id) = @_;
	return sql("SELECT gpor_enabled FROM gpo_refresh_token WHERE gpor_id = $id");
}

sub check_refresh
{
	my ($id) = @_;
	return jsql("SELECT appguard_check_refresh('gpo_refresh_token', '$id')");
}

sub sweep
{
	sql(q{CALL appguard_sweep('0 s', '30 s')});
	return jsql('SELECT to_jsonb(w) FROM appguard.sweeps w ORDER BY id DESC LIMIT 1');
}

sub latest_snapshot
{
	return jsql("SELECT jsonb_build_object('id', id, 'status', status, 'facts', facts) "
		  . "FROM appguard.snapshots WHERE host = '$host' ORDER BY id DESC LIMIT 1");
}

$glw->configure(username => 'patient1', password => 'patient-pw-1');
my $redirect = "https://$host:$port/cb";
$glw->add_client(client_id => 'app1', name => 'Example App', secret => 'app1-secret',
	redirect_uri => $redirect);
# a second client the auth server knows and appguard does not
$glw->add_client(client_id => 'app2', name => 'Other App', secret => 'app2-secret',
	redirect_uri => "https://other.example.test:$port/cb");

# ---------------------------------------------------------------- protect Glewlwyd's table
my $columns_sql = q{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
	FROM pg_attribute WHERE attrelid = 'gpo_refresh_token'::regclass AND attnum > 0 AND NOT attisdropped};
my $triggers_sql = q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'gpo_refresh_token'::regclass AND NOT tgisinternal};
my $columns_before = sql($columns_sql);
is(sql($triggers_sql), 0, 'gpo_refresh_token has no trigger of its own');
my $protected = jsql(q{SELECT appguard_protect('gpo_refresh_token', 'gpor_client_id',
	'gpor_enabled', NULL, '1', '0')});
is_deeply(
	[ @{$protected}{qw(key_column status_column status_type active_value suspended_value error_uri_column)} ],
	[ 'gpor_id', 'gpor_enabled', 'smallint', '1', '0', undef ],
	'appguard_protect: Glewlwyd\'s table as it is, a smallint status 1/0, no error_uri column');
is(sql($columns_sql), $columns_before, 'protect adds no column to gpo_refresh_token');
is(sql($triggers_sql), 5, '... but five row and statement triggers');
my $registered = jsql("SELECT appguard_register_client('app1', 'Example App', ARRAY['$redirect'])");
is_deeply([ @{$registered}{qw(host port registrable_domain)} ], [ $host, $port, 'example.test' ],
	'client app1 registered: its redirect URI host and port are watched');
my $first = jsql("SELECT appguard_snapshot('$host', $port)");
is_deeply([ $first->{status}, $first->{tls}{verified}, $first->{tls}{leaf}{validation},
		$first->{tls}{leaf}{subject}{O}, $first->{dns}{ownership_ids} ],
	[ 'ok', JSON::PP::true, 'OV', 'Example Health, Inc.', ['app1'] ],
	'the app measured: trusted OV certificate of Example Health, ownership record present');

# ---------------------------------------------------------------- consent
my $consent = jsql(q{SELECT appguard_consent_info('app1')});
is_deeply(
	{ map { $_ => $consent->{$_} } qw(domain app_name organization location ownership_verified level label snapshot_id) },
	{
		domain => 'example.test', app_name => 'Example App',
		organization => 'Example Health, Inc.', location => 'Verona, Wisconsin, US',
		ownership_verified => JSON::PP::true, level => 'organization',
		label => 'Example App — Example Health, Inc., Verona, Wisconsin, US (example.test, domain ownership verified)',
		snapshot_id => $first->{id},
	},
	'appguard_consent_info: what the consent screen shows, from the latest snapshot');

my $patient = $glw->login('patient1', 'patient-pw-1');
my %rt;       # name => refresh token
my %id;       # name => gpor_id
for my $name (qw(t1 t2 t3))
{
	my $r = $glw->consent_and_token($patient, 'app1');
	is($r->{status}, 200, "$name: authorization code exchanged for tokens (HTTP 200)")
	  or diag $r->{body};
	$rt{$name} = $r->{token}{refresh_token};
	$id{$name} = $glw->refresh_token_id($rt{$name});
}
my $r1 = row_of($id{t1});
is_deeply([ @{$r1}{qw(client_id state baseline_snapshot_id)} ], [ 'app1', 'active', $first->{id} ],
	'the refresh token row is guarded: active, its baseline the snapshot shown at consent');
is(sql("SELECT count(*) FROM gpo_refresh_token_scope s JOIN gpo_refresh_token r USING (gpor_id)
		WHERE r.gpor_id IN ($id{t1}, $id{t2}, $id{t3})"), 6,
	'Glewlwyd stored each token\'s scopes under its own id');

my ($status, $body) = $glw->refresh('app1', $rt{t1});
is($status, 200, 'refresh: HTTP 200');
ok(eval { $json->decode($body)->{access_token} }, 'refresh: a new access token');
is_deeply(check_refresh($id{t1}), { allowed => JSON::PP::true }, 'appguard_check_refresh agrees: allowed');

my $other = $glw->consent_and_token($patient, 'app2');
is($other->{status}, 200, 'a token of the client appguard does not know');
my $rt_other = $other->{token}{refresh_token};
is_deeply(jsql(q{SELECT jsonb_agg(u) FROM appguard.unregistered_grants u}),
	[ { token_table => 'gpo_refresh_token', client_id => 'app2', active_grants => 1 } ],
	'its grant is left alone and counted in appguard.unregistered_grants');

# ---------------------------------------------------------------- renewal, same identity
$env->tls_host($host, addr => $addr, cert => 'app-renewed');
$env->reload;
my $w = sweep();
is_deeply([ @{$w}{qw(state measured drifted suspended)} ], [ 'finished', 1, 0, 0 ],
	'renewal with the same organization: the sweep measures it and suspends nothing');
my $renewed = latest_snapshot();
isnt($renewed->{facts}{tls}{leaf}{spki_sha256}, $first->{tls}{leaf}{spki_sha256},
	'the renewed certificate has another key');
($status) = $glw->refresh('app1', $rt{t1});
is($status, 200, 'after the renewal the same refresh token still works');

# Glewlwyd revokes t3 while it is active (RFC 7009, by the client): it
# sets gpor_enabled = 0, which appguard records as the host's decision
is($glw->revoke('app1', $rt{t3}), 200, 'Glewlwyd revokes t3');
is(row_of($id{t3})->{state}, 'inactive', 'appguard records t3 as disabled by the host');

# ---------------------------------------------------------------- the organization changes
$env->tls_host($host, addr => $addr, cert => 'app-harvest');
$env->reload;
$w = sweep();
is_deeply([ @{$w}{qw(state measured drifted suspended tokens_suspended)} ], [ 'finished', 1, 1, 1, 2 ],
	'new organization in the certificate: the sweep suspends the two active grants');
is_deeply([ map { enabled_of($id{$_}) } qw(t1 t2 t3) ], [ 0, 0, 0 ],
	'gpor_enabled is 0 for t1 and t2 (appguard) and still 0 for t3 (Glewlwyd)');
is(row_of($id{t3})->{state}, 'inactive', 't3 was not touched: appguard did not disable it');

($status, $body) = $glw->refresh('app1', $rt{t1});
is($status, 400, 'the same refresh now answers HTTP 400 from Glewlwyd');
is($body, '', '... with the empty body Glewlwyd gives a refused refresh');
($status) = $glw->refresh('app2', $rt_other);
is($status, 200, 'the unregistered client\'s token still refreshes');

my $refusal = check_refresh($id{t1});
my $susp = jsql("SELECT to_jsonb(s) FROM appguard.suspensions s WHERE s.client_id = 'app1'");
is_deeply($refusal, {
		allowed => JSON::PP::false,
		error => {
			error => 'invalid_grant',
			error_description => 'Access for this app has been suspended because its security information changed since you approved it.',
			error_uri => "https://auth.example.org/appguard/suspensions/$susp->{id}?client=app1",
		} },
	'appguard_check_refresh: the invalid_grant body with the grant\'s error_uri');
is(row_of($id{t1})->{error_uri}, $refusal->{error}{error_uri},
	'appguard keeps that error_uri for the row (the table has no column for it)');

my $ex = jsql("SELECT appguard_explain($susp->{id})");
is_deeply($ex->{reasons}, ['tls_identity_changed'], 'explanation: the reason');
my ($o) = grep { $_->{field} eq 'tls.leaf.subject.O' } @{ $ex->{changes} };
is_deeply([ $o->{old}, $o->{new} ], [ 'Example Health, Inc.', 'Data Harvest Ltd' ],
	'explanation: the organization, old and new');
is($ex->{consent}{text},
	'You were shown "Example App — Example Health, Inc., Verona, Wisconsin, US (example.test, domain ownership verified)"; '
	  . 'it is now "Example App — Data Harvest Ltd, Road Town, VG (example.test, domain ownership verified)".',
	'explanation: you were shown X, it is now Y');
is_deeply([ map { $_->{field} } @{ $ex->{consent}{changes} } ], [ 'organization', 'location' ],
	'explanation: the shown fields that changed');

# Glewlwyd revokes only tokens it considers active (gpor_enabled = 1): its
# revocation of a token appguard suspended answers 200 and writes nothing,
# so appguard cannot see it (a limit for such hosts, see the README).
is($glw->revoke('app1', $rt{t2}), 200, 'Glewlwyd "revokes" the suspended t2 (HTTP 200)');
is(row_of($id{t2})->{state}, 'suspended', '... without writing to its table: appguard still holds t2');
# The host's own write of the status column is its decision, even with
# the value appguard set: appguard hands the row over.
sql("SET ROLE glewlwyd; UPDATE gpo_refresh_token SET gpor_enabled = 0 WHERE gpor_id = $id{t2}");
is(row_of($id{t2})->{state}, 'inactive', 'the host disables t2 in its table: appguard hands it over');

# ---------------------------------------------------------------- re-approval
my $re = jsql("SELECT appguard_reapprove('gpo_refresh_token', '$id{t1}')");
my $now_snapshot = latest_snapshot();
is_deeply([ @{$re}{qw(reapproved baseline_snapshot_id suspension_id)} ],
	[ JSON::PP::true, $now_snapshot->{id}, $susp->{id} ],
	'appguard_reapprove: t1 re-enabled with the current snapshot as its new baseline');
is(enabled_of($id{t1}), 1, 'gpor_enabled is 1 again');
($status) = $glw->refresh('app1', $rt{t1});
is($status, 200, 'the same refresh answers HTTP 200 again');
for my $name (qw(t2 t3))
{
	my (undef, $err) = try_sql("SELECT appguard_reapprove('gpo_refresh_token', '$id{$name}')");
	like($err, qr/was disabled by the host, not suspended by appguard/,
		"re-approval refuses $name, which the host disabled");
	($status) = $glw->refresh('app1', $rt{$name});
	is($status, 400, "$name stays refused by Glewlwyd");
}
$w = sweep();
is($w->{suspended}, 0, 'the next sweep finds nothing new');
($status) = $glw->refresh('app1', $rt{t1});
is($status, 200, 't1 keeps working against its new baseline');
is_deeply(
	[ map { $_->{kind} } @{ jsql(q{SELECT jsonb_agg(e ORDER BY id) FROM appguard.events e
		WHERE token_table::regclass = 'gpo_refresh_token'::regclass AND token_key IS NOT NULL}) } ],
	[ 'host_took_over', 'reapproved' ],
	'events: the host took t2 over, t1 was re-approved');

# ---------------------------------------------------------------- the app's DNS says nothing
# A stale cache forces a live snapshot at issuance; with a resolver that
# never answers it fails within appguard.baseline_timeout_ms (default
# 500 ms), and the token is issued with its baseline pending.
my $silent = $env->silent_dns;
# (LOAD first: ALTER SYSTEM knows appguard's settings once the library is loaded)
sql("LOAD 'appguard'; ALTER SYSTEM SET appguard.dns_servers = '$silent'; "
	  . "ALTER SYSTEM SET appguard.baseline_max_age = '1s'; SELECT pg_reload_conf()");
sleep 1.2;
my $live_failures = q{SELECT count(*) FROM appguard.events WHERE kind = 'live_snapshot_failed'};
my $failures_before = sql($live_failures);
my $t4 = $glw->consent_and_token($patient, 'app1');
is($t4->{status}, 200, 'DNS silent: the token is still issued (HTTP 200)') or diag $t4->{body};
cmp_ok($t4->{seconds}, '<', 5, sprintf('... promptly (%.2f s; the live snapshot gives up after 500 ms)', $t4->{seconds}));
my $failures_after_t4 = sql($live_failures);
my $t5 = $glw->consent_and_token($patient, 'app1');
is($t5->{status}, 200, 'a second token right after: issued too');
is_deeply([ $failures_after_t4 - $failures_before, sql($live_failures) - $failures_after_t4 ], [ 1, 0 ],
	'one failed live snapshot for the first token, none for the second (it joins the consent)');
$id{$_} = $glw->refresh_token_id(($_ eq 't4' ? $t4 : $t5)->{token}{refresh_token}) for qw(t4 t5);
is_deeply([ map { row_of($id{$_})->{baseline_snapshot_id} } qw(t4 t5) ], [ undef, undef ],
	'both grants have their baseline pending');
is(sql(q{SELECT count(*) FROM gpo_refresh_token_scope WHERE gpor_id IN (} . "$id{t4}, $id{t5})"), 4,
	'Glewlwyd stored their scopes under their own ids (its lastval() was kept)');
my $failed = jsql(q{SELECT to_jsonb(e) FROM appguard.events e WHERE kind = 'live_snapshot_failed' ORDER BY id DESC LIMIT 1});
is($failed->{detail}{purpose}, 'baseline', 'the failed live snapshot is recorded');
($status) = $glw->refresh('app1', $t4->{token}{refresh_token});
is($status, 200, 'a grant with a pending baseline refreshes');
is(sql(q{SELECT pending_baselines FROM appguard.client_status WHERE client_id = 'app1'}), 2,
	'client_status counts the pending baselines');

sql("LOAD 'appguard'; ALTER SYSTEM RESET appguard.dns_servers; "
	  . 'ALTER SYSTEM RESET appguard.baseline_max_age; SELECT pg_reload_conf()');
$w = sweep();
my $back = latest_snapshot();
is($back->{status}, 'ok', 'DNS back: the sweep measures the app');
is_deeply([ map { row_of($id{$_})->{baseline_snapshot_id} } qw(t4 t5) ], [ $back->{id}, $back->{id} ],
	'the pending grants take that snapshot as their baseline');
($status) = $glw->refresh('app1', $t5->{token}{refresh_token});
is($status, 200, 'and refresh');

# ---------------------------------------------------------------- unprotect
my $un = jsql(q{SELECT appguard_unprotect('gpo_refresh_token')});
is($un->{rows_left_suspended}, 0, 'appguard_unprotect: no row left suspended');
is(sql($triggers_sql), 0, 'its triggers are gone');
is(sql(q{SELECT count(*) FROM appguard.grant_states WHERE token_table <> 'appguard.refresh_tokens'::regclass}), 0,
	'so is its row state');
is(sql($columns_sql), $columns_before, 'gpo_refresh_token is as Glewlwyd made it');
my $t6 = $glw->consent_and_token($patient, 'app1');
is($t6->{status}, 200, 'Glewlwyd issues tokens after unprotect');
($status) = $glw->refresh('app1', $t6->{token}{refresh_token});
is($status, 200, 'and refreshes them');

ok($glw->alive, 'Glewlwyd ran throughout');
my @errors = grep { / ERROR: / } split /\n/, slurp_file($glw->log_file);
is_deeply(\@errors, [], 'Glewlwyd logged no error');
$glw->stop;
note sprintf 'done in %.1f s', time - $t0;
done_testing();
