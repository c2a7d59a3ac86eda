# Issue 12 ("Consent, not tokens") against a real Glewlwyd (Debian's
# 2.7.5, unmodified, driven only through its HTTP API) whose refresh
# tokens are one-time use ("refresh-token-one-use": "always"): every
# refresh disables the token used (gpor_enabled = 0) and inserts a new row
# with the same gpor_jti and gpoc_id NULL; a disabled token presented again
# disables the enabled rows of its chain.  appguard guards gpo_refresh_token
# with subject_column => 'gpor_username': rows of one (client, patient)
# share that patient's consent.  Glewlwyd cannot call
# appguard_check_refresh, so a suspension shows as gpor_enabled = 0, which
# Glewlwyd refuses (400).
#
#   control: a client of the same host on a plugin without rotation
#   rotation across an organization change, with a fresh snapshot cache and
#   with one older than appguard.baseline_max_age: the rotated token keeps
#   the consent's baseline, so the sweep suspends it
#   a remembered approval (no consent screen) after the change, before and
#   after the sweep: the consent's baseline; after the sweep, suspended at
#   once
#   a fresh consent screen after the change (appguard_consent_info(client,
#   subject)): the token takes exactly the snapshot shown, and refreshes
#   re-approval of a rotated chain (its newest row), then refresh
#   token reuse that breaks a chain: Glewlwyd disables the chain's newest
#   token; re-approval never re-enables it, appguard_explain says whose
#   decision it was
#   appguard.confirmations = 2 with a rotation between the two drifting
#   snapshots
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
$env->certs(
	'app-ov' => {
		san => [$host], policies => ['OV'],
		o => 'Example Health, Inc.', l => 'Verona', st => 'Wisconsin', c => 'US'
	},
	'app-harvest' => {
		san => [$host], policies => ['OV'],
		o => 'Data Harvest Ltd', l => 'Road Town', c => 'VG'
	},
	'app-third' => {
		san => [$host], policies => ['OV'],
		o => 'Third Party Analytics LLC', l => 'Dover', st => 'Delaware', c => 'US'
	});
my $addr = $env->tls_host($host, cert => 'app-ov');
$env->zone('example.test', [ "app A $addr", '@ TXT "appguard-client-id=app1"',
	'@ TXT "appguard-client-id=ctl1"' ]);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

sub certificate
{
	my ($cert) = @_;
	$env->tls_host($host, addr => $addr, cert => $cert);
	$env->reload;
	return;
}

# ---------------------------------------------------------------- cluster and Glewlwyd
my $node = start_node('glewlwyd_rotation', $env);
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

# appguard's state of a row of gpo_refresh_token
sub row_of
{
	my ($id) = @_;
	return jsql("SELECT to_jsonb(g) FROM appguard.grant_states g "
		  . "WHERE g.token_table = 'gpo_refresh_token'::regclass AND g.token_key = '$id'") // {};
}

sub state_of    { return row_of($_[0])->{state} // 'untracked' }
sub baseline_of { return row_of($_[0])->{baseline_snapshot_id} }

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

# ALTER SYSTEM SET (undef: RESET) and reload; Glewlwyd's connections read
# the file at their next statement.
sub settings
{
	my (%s) = @_;
	my $q = "LOAD 'appguard'; ";
	for my $name (sort keys %s)
	{
		$q .= defined $s{$name}
		  ? "ALTER SYSTEM SET $name = '$s{$name}'; "
		  : "ALTER SYSTEM RESET $name; ";
	}
	sql($q . 'SELECT pg_reload_conf()');
	sleep 0.3;
	return;
}

# ---------------------------------------------------------------- Glewlwyd's set-up
# "oidc" rotates every refresh token; "oidc_static" (the control client's)
# never does.
$glw->configure(username => 'patient_ctl', password => 'pw-patient_ctl', one_use => 'always');
$glw->add_plugin(name => 'oidc_static', one_use => 'never');
my $redirect = "https://$host:$port/cb";
$glw->add_client(client_id => 'app1', name => 'Example App', secret => 'app1-secret',
	redirect_uri => $redirect);
$glw->add_client(client_id => 'ctl1', name => 'Example Control App', secret => 'ctl1-secret',
	redirect_uri => "https://$host:$port/ctl/cb", plugin => 'oidc_static');
my %cookie = (patient_ctl => $glw->login('patient_ctl', 'pw-patient_ctl'));
for my $user (qw(patient_fresh patient_stale patient_remember patient_reuse patient_confirm))
{
	$glw->add_user($user, "pw-$user");
	$cookie{$user} = $glw->login($user, "pw-$user");
}

# ---------------------------------------------------------------- protect Glewlwyd's table
my $has_subject = sql(q{SELECT count(*) FROM pg_proc
	WHERE proname = 'appguard_protect' AND 'subject_column' = ANY (proargnames)});
ok($has_subject, 'appguard_protect takes subject_column');
my $has_info2 = sql(q{SELECT to_regprocedure('appguard_consent_info(text, text)') IS NOT NULL}) eq 't';
ok($has_info2, 'appguard_consent_info(client_id, subject) exists');
my $protected = jsql(q{SELECT appguard_protect('gpo_refresh_token', 'gpor_client_id', 'gpor_enabled', NULL, '1', '0'}
	  . ($has_subject ? q{, subject_column => 'gpor_username'} : '') . ')');
is_deeply([ @{$protected}{qw(key_column status_column active_value suspended_value)} ],
	[ 'gpor_id', 'gpor_enabled', '1', '0' ],
	'appguard_protect: gpo_refresh_token, status 1/0, rows of one patient share a consent');
for my $client (qw(app1 ctl1))
{
	my $path = $client eq 'app1' ? 'cb' : 'ctl/cb';
	my $name = $client eq 'app1' ? 'Example App' : 'Example Control App';
	sql("SELECT appguard_register_client('$client', '$name', ARRAY['https://$host:$port/$path'])");
}
my $b0 = jsql("SELECT appguard_snapshot('$host', $port)");
is_deeply([ $b0->{status}, $b0->{tls}{leaf}{subject}{O} ], [ 'ok', 'Example Health, Inc.' ],
	'the app measured: Example Health');
$b0 = $b0->{id};

# ---------------------------------------------------------------- grants and chains
# A chain: the refresh tokens of one grant, oldest first, and their rows.
# shown => 1: the consent screen (appguard_consent_info(client, subject),
# then the patient approves, which Glewlwyd remembers); otherwise a
# remembered approval: the code at once, no screen.
sub consent_screen
{
	my ($client, $user) = @_;
	return jsql($has_info2
		? "SELECT appguard_consent_info('$client', '$user')"
		: "SELECT appguard_consent_info('$client')");
}

sub new_grant
{
	my ($what, $client, $user, %o) = @_;
	my $shown;
	if ($o{shown})
	{
		$shown = consent_screen($client, $user);
		$o{before_approval}->() if $o{before_approval};
		$glw->grant($cookie{$user}, $client);
	}
	my $r = $glw->authorize_and_token($cookie{$user}, $client);
	is($r->{status}, 200, "$what: code exchanged for tokens (HTTP 200)") or diag $r->{body};
	my $rt = $r->{token}{refresh_token} // '';
	return {
		client => $client, user => $user, shown => $shown,
		rts => [$rt], ids => [ $rt ne '' ? $glw->refresh_token_id($rt) : -1 ] };
}

sub newest { return $_[0]{ids}[-1] }

# A refresh with the chain's newest token; a new refresh token joins the
# chain.  Returns the HTTP status.
sub refresh_chain
{
	my ($c) = @_;
	my ($status, $body) = $glw->refresh($c->{client}, $c->{rts}[-1]);
	if ($status == 200)
	{
		my $new = eval { $json->decode($body)->{refresh_token} };
		if ($new && $new ne $c->{rts}[-1])
		{
			push @{ $c->{rts} }, $new;
			push @{ $c->{ids} }, $glw->refresh_token_id($new);
		}
	}
	return $status;
}

# ================================================================ before the change
# ---------------------------------------------------------------- control, no rotation
my $ctl = new_grant('control client', 'ctl1', 'patient_ctl', shown => 1);
is(refresh_chain($ctl), 200, 'control: refresh 200');
is_deeply([ scalar @{ $ctl->{ids} }, sql(q{SELECT count(*) FROM gpo_refresh_token WHERE gpor_client_id = 'ctl1'}),
		enabled_of(newest($ctl)) ],
	[ 1, 1, 1 ], 'control: Glewlwyd kept the same refresh token (no rotation, no new row)');
is(baseline_of(newest($ctl)), $b0, 'control: its baseline is the snapshot shown');

# ---------------------------------------------------------------- a rotation, nothing changed
my $fresh = new_grant('fresh-cache patient', 'app1', 'patient_fresh', shown => 1);
is($fresh->{shown}{snapshot_id}, $b0, 'the consent screen showed the app\'s snapshot');
is(refresh_chain($fresh), 200, 'rotation: refresh 200');
is(scalar @{ $fresh->{ids} }, 2, '... with a new refresh token');
is_deeply([ map { enabled_of($_) } @{ $fresh->{ids} } ], [ 0, 1 ],
	'one-time use: Glewlwyd disabled the token used and inserted an enabled row');
is(sql('SELECT count(DISTINCT gpor_jti) || \' \' || count(gpoc_id) || \' \' || count(DISTINCT gpor_username) '
		  . "FROM gpo_refresh_token WHERE gpor_id IN ($fresh->{ids}[0], $fresh->{ids}[1])"), '1 1 1',
	'one chain: the same gpor_jti and username, gpoc_id on the first row only');
is_deeply([ map { state_of($_) } @{ $fresh->{ids} } ], [ 'inactive', 'active' ],
	'appguard: the used token is the host\'s decision, the rotated row is active');
is(baseline_of(newest($fresh)), $b0, 'the rotated row has the consent\'s baseline');

my $stale    = new_grant('stale-cache patient', 'app1', 'patient_stale', shown => 1);
my $remember = new_grant('remembering patient', 'app1', 'patient_remember', shown => 1);

# ---------------------------------------------------------------- a chain broken by reuse
# The patient's first grant, then a second one (remembered approval, e.g.
# another device); then the first grant's chain rotates, so its newest
# token is the patient's newest row, and an old token of it is reused.
my $reuse  = new_grant('reusing patient', 'app1', 'patient_reuse', shown => 1);
my $reuse2 = new_grant('reusing patient\'s remembered second grant', 'app1', 'patient_reuse');
is(baseline_of(newest($reuse2)), $b0, '... with the consent\'s baseline');
is(refresh_chain($reuse), 200, 'reuse chain: rotated once');
my ($u0, $u1) = @{ $reuse->{ids} };
my ($status) = $glw->refresh('app1', $reuse->{rts}[0]);
is($status, 400, 'the old token presented again: HTTP 400');
is_deeply([ enabled_of($u0), enabled_of($u1) ], [ 0, 0 ],
	'Glewlwyd broke the chain: it disabled the chain\'s newest token');
is(state_of($u1), 'inactive', 'appguard records the newest token as disabled by the host');
is(refresh_chain($reuse), 400, 'the newest token is refused');
is_deeply([ enabled_of(newest($reuse2)), state_of(newest($reuse2)) ], [ 1, 'active' ],
	'the patient\'s other grant is untouched');

# ================================================================ the organization changes
certificate('app-harvest');

# ---------------------------------------------------------------- rotation, fresh cache
is(refresh_chain($fresh), 200, 'fresh cache: the app rotates its token after the change (HTTP 200)');
is(baseline_of(newest($fresh)), $b0, 'fresh cache: the rotated row keeps the consent\'s baseline');

# ---------------------------------------------------------------- rotation, stale cache
settings('appguard.baseline_max_age' => '1s');
sleep 1.1;
is(refresh_chain($stale), 200, 'stale cache: the app rotates its token after the change (HTTP 200)');
is(scalar @{ $stale->{ids} }, 2, '... a rotated row');
is(baseline_of(newest($stale)), $b0,
	'stale cache: the rotated row keeps the consent\'s baseline, not the changed facts measured live');

# ---------------------------------------------------------------- remembered approval, before the sweep
my $remember1 = new_grant('remembered approval after the change', 'app1', 'patient_remember');
is(baseline_of(newest($remember1)), $b0,
	'remembered approval after the change: the consent\'s baseline, not the changed facts');

# ---------------------------------------------------------------- the sweep
my $w = sweep();
is($w->{state}, 'finished', 'the sweep measures the changed certificate');
is(latest_snapshot()->{facts}{tls}{leaf}{subject}{O}, 'Data Harvest Ltd', '... Data Harvest Ltd');

is(refresh_chain($ctl), 400, 'control client: refused after the sweep (HTTP 400)');
is_deeply([ enabled_of(newest($ctl)), state_of(newest($ctl)) ], [ 0, 'suspended' ],
	'control: gpor_enabled 0, suspended by appguard');
is(refresh_chain($fresh), 400, 'fresh cache: the rotated token is refused after the sweep (HTTP 400)');
is(state_of(newest($fresh)), 'suspended', '... suspended by appguard');
is(refresh_chain($stale), 400, 'stale cache: the rotated token is refused after the sweep (HTTP 400)');
is_deeply([ enabled_of(newest($stale)), state_of(newest($stale)) ], [ 0, 'suspended' ],
	'stale cache: gpor_enabled 0, suspended by appguard');
my $refusal = check_refresh(newest($stale));
is_deeply([ $refusal->{allowed}, $refusal->{error}{error} ], [ JSON::PP::false, 'invalid_grant' ],
	'appguard_check_refresh on the rotated row: invalid_grant');
like($refusal->{error}{error_uri} // '', qr{^https://auth\.example\.org/appguard/suspensions/\d+\?client=app1$},
	'... with an error_uri');
is(refresh_chain($remember), 400, 'remembering patient\'s first token: refused (HTTP 400)');
is(refresh_chain($remember1), 400, 'the remembered approval issued after the change: refused (HTTP 400)');
is(refresh_chain($reuse2), 400, 'reusing patient\'s live grant: refused (HTTP 400)');
is_deeply([ enabled_of($u1), state_of($u1) ], [ 0, 'inactive' ],
	'the chain Glewlwyd broke stays the host\'s decision');

# ---------------------------------------------------------------- remembered approval, after the sweep
my $remember2 = new_grant('remembered approval after the sweep', 'app1', 'patient_remember');
my $m2 = newest($remember2);
is_deeply([ enabled_of($m2), state_of($m2) ], [ 0, 'suspended' ],
	'remembered approval after the sweep: the token is inserted suspended at once');
like(row_of($m2)->{error_uri} // '', qr{^https://auth\.example\.org/appguard/suspensions/\d+\?client=app1$},
	'... with its error_uri (kept by appguard: the table has no column for it)');
is(check_refresh($m2)->{allowed}, JSON::PP::false, '... appguard_check_refresh refuses it');
is(refresh_chain($remember2), 400, '... Glewlwyd refuses it (HTTP 400)');

# ---------------------------------------------------------------- a fresh consent screen
# The patient is shown the app's facts again and approves; a sweep measures
# the app once more in between: the token takes the snapshot shown.
my $before_approval_snapshot;
my $reconsent = new_grant('fresh consent screen after the change', 'app1', 'patient_remember',
	shown => 1,
	before_approval => sub { sweep(); $before_approval_snapshot = latest_snapshot()->{id} });
is($reconsent->{shown}{organization}, 'Data Harvest Ltd', 'the consent screen shows the new organization');
isnt($before_approval_snapshot, $reconsent->{shown}{snapshot_id}, 'a newer snapshot was taken after it was shown');
is_deeply([ enabled_of(newest($reconsent)), state_of(newest($reconsent)) ], [ 1, 'active' ],
	'the fresh consent\'s token is active');
is(baseline_of(newest($reconsent)), $reconsent->{shown}{snapshot_id},
	'its baseline is exactly the snapshot shown, not a newer one');
is(refresh_chain($reconsent), 200, 'it refreshes (HTTP 200)');
sweep();
is(refresh_chain($reconsent), 200, 'and still after the next sweep (HTTP 200), rotated twice');

# ---------------------------------------------------------------- re-approval of a rotated chain
my $s_newest = newest($stale);
my $re = jsql("SELECT appguard_reapprove('gpo_refresh_token', '$s_newest')");
is($re->{reapproved}, JSON::PP::true, 're-approval of the rotated chain\'s newest row');
is(enabled_of($s_newest), 1, '... gpor_enabled is 1 again');
is(refresh_chain($stale), 200, 'the re-approved chain refreshes (HTTP 200)');
my $s_next = newest($stale);
isnt($s_next, $s_newest, '... and rotates');
is(baseline_of($s_next), $re->{baseline_snapshot_id}, 'the rotated row has the re-approval\'s baseline');
is_deeply([ enabled_of($s_next), state_of($s_next) ], [ 1, 'active' ], '... and is active');
sweep();
is(refresh_chain($stale), 200, 'it keeps refreshing after the next sweep (HTTP 200)');
is_deeply([ map { enabled_of($_) } @{ $stale->{ids} }[ 0 .. $#{ $stale->{ids} } - 1 ] ],
	[ (0) x $#{ $stale->{ids} } ], 'the chain\'s older tokens stay disabled');

# ---------------------------------------------------------------- re-approval and the broken chain
# The patient re-approves: appguard restores the newest live row of the
# patient's grants (its second grant), never the token Glewlwyd disabled
# (the newest row, but not live), and the explanation of the suspension
# says that token was Glewlwyd's decision.
my $v0 = newest($reuse2);
my $suspension = row_of($v0)->{suspension_id};
ok($suspension, 'the reusing patient\'s live grant is suspended');
my $ex = $suspension ? jsql("SELECT appguard_explain($suspension)") : {};
my ($out, $err) = try_sql("SELECT appguard_reapprove('gpo_refresh_token', '$u1')");
note "appguard_reapprove of the broken chain's newest token: $out$err";
is_deeply([ enabled_of($u1), state_of($u1) ], [ 0, 'inactive' ],
	're-approval does not re-enable the token Glewlwyd disabled after the reuse');
($status) = $glw->refresh('app1', $reuse->{rts}[-1]);
is($status, 400, '... Glewlwyd still refuses it (HTTP 400)');

# The explanation counts that token among those the host disabled itself
# (host_decisions): the tokens of the suspension's client and baseline the
# host made inactive, its own among them.
# (the set as appguard_explain defines it, in appguard.grants)
my $disabled_by_host = q{
	FROM appguard.grants g, appguard.suspensions s
	WHERE s.id = %s AND g.state = 'inactive'
	  AND (g.suspension_id = s.id OR (g.client_id = s.client_id AND g.subject IS NOT NULL
	       AND g.baseline_snapshot_id = s.baseline_snapshot_id AND g.suspension_id IS NULL))};
my $s_id = $suspension || 'NULL';
is(sql(sprintf("SELECT count(*) $disabled_by_host AND g.token_table = 'gpo_refresh_token'::regclass"
		  . " AND g.token_key = '%s'", $s_id, $u1)), 1,
	'the broken chain\'s token is one the host disabled on the suspension\'s baseline');
my $host_disabled = sql(sprintf("SELECT count(*) $disabled_by_host", $s_id));
is(ref $ex->{host_decisions} ? $ex->{host_decisions}{tokens_disabled_by_host} : undef, $host_disabled,
	'appguard_explain counts the tokens the host disabled, the broken chain\'s among them')
  or diag $json->encode($ex);

($out, $err) = try_sql("SELECT appguard_reapprove('gpo_refresh_token', '$v0')");
is($err, '', 're-approval of the patient\'s live grant is not blocked by the broken chain');
is(enabled_of($v0), 1, '... its token is enabled again');
is(refresh_chain($reuse2), 200, '... and refreshes (HTTP 200)');
is_deeply([ enabled_of($u1), state_of($u1) ], [ 0, 'inactive' ], 'the broken chain stays disabled');

# ================================================================ two confirmations
settings('appguard.baseline_max_age' => undef, 'appguard.confirmations' => 2);
my $confirm = new_grant('patient consenting with two confirmations', 'app1', 'patient_confirm', shown => 1);
my $c_baseline = baseline_of(newest($confirm));
is($c_baseline, $confirm->{shown}{snapshot_id}, 'its baseline: the snapshot shown (Data Harvest)');
certificate('app-third');
$w = sweep();
is_deeply([ $w->{drifted}, $w->{suspended} ], [ 1, 0 ], 'first drifting snapshot: not yet confirmed');
is(refresh_chain($confirm), 200, 'a rotation between the two drifting snapshots (HTTP 200)');
is(baseline_of(newest($confirm)), $c_baseline, 'the rotated row keeps the consent\'s baseline');
$w = sweep();
is($w->{drifted}, 1, 'second drifting snapshot');
is(refresh_chain($confirm), 400, 'confirmed: the rotated token is refused (HTTP 400)');
is(state_of(newest($confirm)), 'suspended', '... suspended by appguard');

# ---------------------------------------------------------------- the end
ok($glw->alive, 'Glewlwyd ran throughout');
my @errors = grep { / ERROR: / } split /\n/, slurp_file($glw->log_file);
is_deeply(\@errors, [], 'Glewlwyd logged no error');
$glw->stop;
note sprintf 'done in %.1f s', time - $t0;
done_testing();
