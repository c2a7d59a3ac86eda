# What the patient sees, in a real browser, on a second real auth server
# that rotates: node-oidc-provider 9 (test/oidc-provider/server.js, the
# deployer's example) on Debian's Node.js, its refresh tokens in a table of
# the test cluster guarded by appguard_protect (grantId as the grant,
# accountId as the subject), and Debian's Chromium, headless, driven by
# puppeteer-core (test/oidc-provider/walk.js):
#
#   login -> consent screen with the organization (screenshot, axe-core)
#   -> code exchange with PKCE -> refreshes that rotate
#   -> the app's certificate names another organization -> sweep
#   -> refused refresh: invalid_grant with appguard's error_uri
#   -> the error_uri page in the browser: old and new organization
#      (screenshot, axe-core, a phone's width), its re-approval link
#   -> a new consent screen with the new organization -> refresh works
#   bad input: unknown, malformed, foreign, re-approved and pruned
#   suspension ids; <script> and <img onerror> in an app's name, its
#   organization and its client id come out escaped, and nothing runs even
#   with the pages' CSP switched off.
#
# Chromium reaches only the server's loopback address: every host name maps
# to NOTFOUND, the redirect URIs are answered inside the browser, and its
# net log is checked for connections and DNS lookups.  Screenshots and net
# logs: tmp_check/oidc_provider/ (the path is printed).
use strict;
use warnings;

use File::Path qw(make_path);
use FindBin;
use HTTP::Tiny;
use JSON::PP ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use lib "$FindBin::RealBin/../oidc-provider";

use AppGuard::OidcProvider;
use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node sql_literal);

my $NODE     = '/usr/bin/node';
my $NPM      = '/usr/bin/npm';
my $CHROMIUM = '/usr/bin/chromium';
plan skip_all => "node, npm or chromium is not installed (test/install-deps.sh installs them: apt-get install chromium nodejs npm)"
  unless -x $NODE && -x $NPM && -x $CHROMIUM;
plan skip_all => "test/oidc-provider/node_modules is missing or older than its package-lock.json (test/install-deps.sh runs npm ci)"
  unless AppGuard::OidcProvider::node_modules_current();

my $t0   = time;
my $json = JSON::PP->new->canonical;
my $dir  = $AppGuard::OidcProvider::DIR;
my $out  = "$PostgreSQL::Test::Utils::tmp_check/oidc_provider";
make_path($out);
note "screenshots and net logs: $out";

# ---------------------------------------------------------------- the apps' servers
my $env  = AppGuard::TestEnv->new;
my $port = $env->tls_port;
my $net  = $env->net;
my $host = 'app.example.test';
my $evil_host = 'evil.example.test';
my $evil_id   = 'evil<script>window.__pwned=1</script>';
my $evil_name = '<img src=x onerror="window.__pwned=2">Evil App';
my $evil_org1 = '<script>window.__pwned=3</script> Org';
my $evil_org2 = '<img src=x onerror=alert(4)>';
$env->certs(
	'app-ov' => { san => [$host], policies => ['OV'], o => 'Example Health, Inc.', l => 'Verona',
		st => 'Wisconsin', c => 'US' },
	'app-harvest' => { san => [$host], policies => ['OV'], o => 'Data Harvest Ltd', l => 'Road Town', c => 'VG' },
	'evil-1' => { san => [$evil_host], policies => ['OV'], o => $evil_org1, c => 'US' },
	'evil-2' => { san => [$evil_host], policies => ['OV'], o => $evil_org2, c => 'US' });
my $addr      = $env->tls_host($host,      cert => 'app-ov');
my $evil_addr = $env->tls_host($evil_host, cert => 'evil-1');
$env->zone('example.test', [ "app A $addr", "evil A $evil_addr", '@ TXT "appguard-client-id=app1"' ]);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- cluster, database, server
my $node = start_node('oidc', $env);
my $oidc_addr = "$net.250.2";
my $base      = "http://$oidc_addr:4600";
$node->safe_psql('postgres', "LOAD 'appguard';
	ALTER SYSTEM SET appguard.error_uri_template = '$base/appguard/suspensions/{suspension_id}?client={client_id}';
	ALTER SYSTEM SET appguard.reapprove_uri_template = '$base/appguard/reapprove/{suspension_id}?client={client_id}';
	SELECT pg_reload_conf();");
my $srv = AppGuard::OidcProvider->new(
	env => $env, psql => sub { my ($db, $sql) = @_; return $node->safe_psql($db, $sql) },
	pghost => $node->host, pgport => $node->port, addr => $oidc_addr, port => 4600,
	accounts => { patient1 => { password => 'patient-pw-1', name => 'Pat Patient' } },
	clients => [
		{ client_id => 'app1', client_name => 'Example App',
		  redirect_uris => ["https://$host:$port/cb"], initiate_login_uri => "https://$host:$port/launch" },
		{ client_id => $evil_id, client_name => $evil_name, redirect_uris => ["https://$evil_host:$port/cb"] },
	]);
my $protected = $srv->create_database;
is_deeply([ @{$protected}{qw(key_column subject_column grant_column error_uri_column)} ],
	[ 'id', 'account_id', 'grant_id', 'error_uri' ],
	'protect.sql: oidc_refresh_tokens guarded, account_id the subject, grant_id the grant');
$srv->start;
my $disco = HTTP::Tiny->new(proxy => undef, http_proxy => undef, timeout => 10)
  ->get("$base/.well-known/openid-configuration");
my $meta = eval { $json->decode($disco->{content}) } // {};
is_deeply([ $disco->{status}, $meta->{issuer}, $meta->{code_challenge_methods_supported} ],
	[ 200, $base, ['S256'] ],
	'the server answers on the env\'s loopback address: its discovery document, PKCE with S256');
note sprintf 'oidc-provider up at %s in %.1f s', $base, time - $t0;

sub sql  { return $node->safe_psql('oidc', $_[0]) }
sub jsql { my $o = sql($_[0]); return $o eq '' ? undef : $json->decode($o) }

# ---------------------------------------------------------------- the walk
# One run of walk.js: a job of steps; returns its result (steps by name,
# net log summary).  The browser profile is kept between runs (the
# patient's session cookie).
my $walks = 0;
sub walk
{
	my ($label, $steps, %o) = @_;
	my $job = { base => $base, out_dir => $out, profile => "$out/profile", label => $label,
		steps => $steps, tokens => $o{tokens} // {} };
	my $file = "$out/job-$label.json";
	open my $fh, '>', $file or die $!;
	print $fh $json->encode($job);
	close $fh;
	my $started = time;
	my $res = `cd '$dir' && '$NODE' walk.js '$file' 2>'$out/walk-$label.stderr'`;
	note sprintf "walk %s: %.1f s", $label, time - $started;
	my $r = eval { $json->decode($res) };
	unless ($r)
	{
		fail("walk $label ran");
		diag slurp_file("$out/walk-$label.stderr");
		return { steps => {} };
	}
	for my $name (sort keys %{ $r->{steps} })
	{
		diag "$label/$name: $r->{steps}{$name}{exception}" if $r->{steps}{$name}{exception};
	}
	check_netlog($label, $r->{netlog});
	$walks++;
	return $r;
}

my $loopback = qr/^(?:127\.\d+\.\d+\.\d+|\[::1\]):\d+$/;
sub check_netlog
{
	my ($label, $n) = @_;
	is($n->{resolver_jobs}, 0, "walk $label: Chromium looked up no host name (net log)");
	my @tcp = @{ $n->{tcp} };
	ok(@tcp && !grep({ !/$loopback/ } @tcp),
		"walk $label: every TCP connection Chromium opened went to a loopback address (@tcp)");
	my @url_hosts = grep { !/^(?:\Q$oidc_addr\E|\Q$host\E|\Q$evil_host\E)$/ } @{ $n->{url_hosts} };
	note "walk $label: Chromium's own requests failed by the host-resolver rule before any lookup: @url_hosts"
	  if @url_hosts;
	note "walk $label: UDP sockets connected (route probes, no packet sent): @{ $n->{udp_connect} }";
	return;
}

sub serious { return [ grep { ($_->{impact} // '') =~ /^(serious|critical)$/ } @{ $_[0]{violations} // [] } ] }
sub axe_note
{
	my ($what, $axe) = @_;
	note sprintf '%s: axe-core %d rules passed, violations: %s', $what, $axe->{passes} // 0,
	  join(', ', map { "$_->{id} ($_->{impact}, $_->{nodes} nodes)" } @{ $axe->{violations} // [] }) || 'none';
}

my $first = jsql("SELECT appguard_snapshot('$host', $port)");
is_deeply([ $first->{status}, $first->{tls}{leaf}{subject}{O}, $first->{tls}{leaf}{validation} ],
	[ 'ok', 'Example Health, Inc.', 'OV' ], 'the app measured: OV certificate of Example Health, Inc.');
my $evil_first = jsql("SELECT appguard_snapshot('$evil_host', $port)");
is($evil_first->{tls}{leaf}{subject}{O}, $evil_org1, 'the hostile app measured: its organization is markup');
is(sql(q{SELECT string_agg(client_id, ',' ORDER BY client_id) FROM appguard.clients}), "app1,$evil_id",
	'the server registered its clients with appguard at start');

# ---------------------------------------------------------------- consent, code, refreshes
my $redirect = "https://$host:$port/cb";
my $evil_redirect = "https://$evil_host:$port/cb";
my $w1 = walk('consent', [
	{ do => 'authorize', name => 't1', client_id => 'app1', redirect_uri => $redirect,
	  username => 'patient1', password => 'patient-pw-1', screenshot => 'consent.png', axe => JSON::PP::true },
	{ do => 'refresh', name => 'r1', client_id => 'app1', refresh_token => '@t1' },
	{ do => 'refresh', name => 'r2', client_id => 'app1', refresh_token => '@t1' },
	{ do => 'authorize', name => 'e1', client_id => $evil_id, redirect_uri => $evil_redirect,
	  username => 'patient1', password => 'patient-pw-1', screenshot => 'consent-hostile.png',
	  no_csp => JSON::PP::true },
]);
my ($t1, $r1, $r2, $e1) = @{ $w1->{steps} }{qw(t1 r1 r2 e1)};
ok($t1->{logged_in}, 'the patient signed in on the login page');
is($t1->{consent}{organization}, 'Example Health, Inc.', 'the consent screen shows the organization');
is($t1->{consent}{label},
	'Example App — Example Health, Inc., Verona, Wisconsin, US (example.test, domain ownership verified)',
	'... in appguard_consent_info\'s label');
ok(-s $t1->{screenshot}, "screenshot of the consent screen: $t1->{screenshot}");
axe_note('consent screen', $t1->{axe});
ok($t1->{axe}{passes} > 0, 'axe-core ran on the consent screen');
is_deeply(serious($t1->{axe}), [], 'consent screen: no serious or critical accessibility violation');
ok($t1->{state_ok}, 'the code came back to the redirect URI with the state');
is($t1->{bad_code_status}, 400, 'a code exchange without the PKCE verifier is refused');
is($t1->{exchange}{status}, 200, 'code exchange with the PKCE verifier: HTTP 200');
ok($t1->{exchange}{has_refresh_token}, '... with a refresh token (offline_access)');
is_deeply([ map { $_->{status} } $r1, $r2 ], [ 200, 200 ], 'two refreshes: HTTP 200');
ok($r1->{rotated} && $r2->{rotated} && $r1->{refresh_token} ne $r2->{refresh_token},
	'... each returned a new refresh token (rotation)');

my $chain = jsql(q{SELECT jsonb_agg(jsonb_build_object('status', t.status, 'state', g.state,
		'baseline', g.baseline_snapshot_id, 'grant', t.grant_id, 'subject', t.account_id) ORDER BY t.created_at)
	FROM oidc_refresh_tokens t JOIN appguard.grant_states g
	  ON g.token_table = 'oidc_refresh_tokens'::regclass AND g.token_key = t.id
	WHERE t.client_id = 'app1'});
is_deeply([ map { "$_->{status}/$_->{state}" } @$chain ],
	[ 'consumed/inactive', 'consumed/inactive', 'active/active' ],
	'the table holds the chain: two rotated-away rows (consumed), the newest active');
is_deeply([ map { $_->{baseline} // 'none' } grep { $_->{state} eq 'active' } @$chain ], [ $first->{id} ],
	'the active row\'s baseline is the snapshot shown on the consent screen');
is(scalar(keys %{ { map { $_->{grant} => 1 } @$chain } }), 1, 'all three rows are one grant (grantId)');

# the hostile app: its name, organization and id are markup
my $ec = $e1->{consent};
like($ec->{text}, qr/\Q$evil_name\E/, 'hostile consent screen: the app name shows as text');
like($ec->{text}, qr/\Q$evil_org1\E/, '... the organization shows as text');
like($ec->{text}, qr/\Q$evil_id\E/, '... the client id shows as text');
is_deeply([ $ec->{scripts}, $ec->{images}, $ec->{pwned}, $ec->{dialogs} ], [ 0, 0, undef, [] ],
	'... no element was injected and nothing ran (CSP switched off)');
is($e1->{exchange}{status}, 200, 'the hostile app gets a token too');

# ---------------------------------------------------------------- the organization changes
$env->tls_host($host, addr => $addr, cert => 'app-harvest');
$env->tls_host($evil_host, addr => $evil_addr, cert => 'evil-2');
$env->reload;
sql(q{CALL appguard_sweep('0 s', '30 s')});
my $sweep = jsql('SELECT to_jsonb(w) FROM appguard.sweeps w ORDER BY id DESC LIMIT 1');
is_deeply([ @{$sweep}{qw(state measured drifted suspended)} ], [ 'finished', 2, 2, 2 ],
	'a sweep after the certificate change: both apps drifted and are suspended');
is(sql(q{SELECT string_agg(status, ',' ORDER BY created_at) FROM oidc_refresh_tokens WHERE client_id = 'app1'}),
	'consumed,consumed,suspended', 'appguard set the active row\'s status to suspended');
my $susp = jsql(q{SELECT to_jsonb(s) FROM appguard.suspensions s WHERE client_id = 'app1'});
my $evil_susp = jsql(q{SELECT to_jsonb(s) FROM appguard.suspensions s WHERE client_id <> 'app1'});

my $w2 = walk('refused', [
	{ do => 'refresh', name => 'r3', client_id => 'app1', refresh_token => '@t1' },
	{ do => 'refresh', name => 're', client_id => $evil_id, refresh_token => '@e1' },
	{ do => 'page', name => 'explain', url => '@r3', screenshot => 'error_uri.png', axe => JSON::PP::true,
	  mobile => JSON::PP::true, follow => '/appguard/reapprove/', intercept => "https://$host:$port/launch" },
	{ do => 'page', name => 'explain_hostile', url => '@re', no_csp => JSON::PP::true,
	  screenshot => 'error_uri-hostile.png' },
], tokens => { t1 => $r2->{refresh_token}, e1 => $e1->{refresh_token} });
my ($r3, $re, $ex, $exh) = @{ $w2->{steps} }{qw(r3 re explain explain_hostile)};
my $error_uri = "$base/appguard/suspensions/$susp->{id}?client=app1";
is($r3->{status}, 400, 'the refresh is refused: HTTP 400');
is_deeply($r3->{body}, { error => 'invalid_grant',
		error_description => 'Access for this app has been suspended because its security information changed since you approved it.',
		error_uri => $error_uri },
	'... with appguard\'s invalid_grant body and error_uri');
like($r3->{content_type} // '', qr{^application/json}, '... as JSON');
is($ex->{status}, 200, 'the error_uri page opens in the browser');
like($ex->{csp}, qr/^default-src 'none'; style-src 'unsafe-inline'$/, '... served under the strict CSP');
like($ex->{text}, qr/Example Health, Inc\./, '... it shows the old organization');
like($ex->{text}, qr/Data Harvest Ltd/, '... and the new one');
like($ex->{text}, qr/example\.test/, '... and the domain');
is_deeply([ $ex->{scripts}, $ex->{csp_violations}, $ex->{lang} ], [ 0, [], 'en' ],
	'... no script, nothing blocked by the CSP, lang="en"');
ok(-s $ex->{screenshot}, "screenshot of the error_uri page: $ex->{screenshot}");
axe_note('error_uri page', $ex->{axe});
ok($ex->{axe}{passes} > 0, 'axe-core ran on the error_uri page');
is_deeply(serious($ex->{axe}), [], 'error_uri page: no serious or critical accessibility violation');
ok(!$ex->{mobile_overflow}, 'the error_uri page fits a phone\'s width (360 px) without scrolling sideways');
like($ex->{followed} // '', qr{^https://\Q$host:$port\E/launch\?iss=},
	'its re-approval link leads the patient to the app, which asks again');

is($re->{status}, 400, 'the hostile app\'s refresh is refused too');
like($exh->{text}, qr/\Q$evil_org1\E/, 'hostile error_uri page: the old organization shows as text');
like($exh->{text}, qr/\Q$evil_org2\E/, '... the new one too');
like($exh->{text}, qr/\Q$evil_id\E/, '... and the client id');
is_deeply([ $exh->{scripts}, $exh->{images}, $exh->{pwned}, $exh->{dialogs} ], [ 0, 0, undef, [] ],
	'... no element was injected and nothing ran (CSP switched off)');

# ---------------------------------------------------------------- re-approval
my $w3 = walk('reapprove', [
	{ do => 'authorize', name => 't2', client_id => 'app1', redirect_uri => $redirect,
	  username => 'patient1', password => 'patient-pw-1', screenshot => 'consent-reapproval.png',
	  axe => JSON::PP::true },
	{ do => 'refresh', name => 'r4', client_id => 'app1', refresh_token => '@t2' },
	{ do => 'refresh', name => 'r5', client_id => 'app1', refresh_token => '@t1' },
], tokens => { t1 => $r2->{refresh_token} });
my ($t2, $r4, $r5) = @{ $w3->{steps} }{qw(t2 r4 r5)};
ok(!$t2->{logged_in}, 're-approval: the patient\'s session is remembered (no login page)');
is($t2->{consent}{organization}, 'Data Harvest Ltd', 'the new consent screen shows the new organization');
is_deeply(serious($t2->{axe}), [], '... with no serious or critical accessibility violation');
is($t2->{exchange}{status}, 200, 'the re-approved code is exchanged');
is($r4->{status}, 200, 'a refresh works again');
ok($r4->{rotated}, '... and rotates');
is($r5->{status}, 400, 'the old token is refused: the server retired it at re-approval');
is_deeply($r5->{body}, { error => 'invalid_grant', error_description => 'The refresh token is not active.' },
	'... as the server\'s own decision (no error_uri)');
is_deeply([ map { $_->{kind} } @{ jsql(q{SELECT jsonb_agg(e ORDER BY id) FROM appguard.events e
		WHERE token_table::regclass = 'oidc_refresh_tokens'::regclass AND token_key IS NOT NULL
		  AND client_id = 'app1'}) } ],
	[ 'reapproved' ],
	'events: the suspended grant was re-approved');
is(sql(q{SELECT string_agg(t.status || '/' || g.state, ',' ORDER BY t.created_at)
	FROM oidc_refresh_tokens t JOIN appguard.grant_states g
	  ON g.token_table = 'oidc_refresh_tokens'::regclass AND g.token_key = t.id WHERE t.client_id = 'app1'}),
	'consumed/inactive,consumed/inactive,revoked/inactive,consumed/inactive,active/active',
	'the chain: the re-approved token revoked by the server, the new one rotated once, its successor active');
my $now_snapshot = jsql(qq{SELECT id FROM appguard.snapshots WHERE host = '$host' ORDER BY id DESC LIMIT 1});
is(sql(qq{SELECT g.baseline_snapshot_id FROM oidc_refresh_tokens t JOIN appguard.grant_states g
	ON g.token_table = 'oidc_refresh_tokens'::regclass AND g.token_key = t.id
	WHERE t.client_id = 'app1' AND t.status = 'active'}), $now_snapshot,
	'the new token\'s baseline is the snapshot shown on the new consent screen');

# ---------------------------------------------------------------- bad input in the browser
my $page = sub { my ($name, $url, %o) = @_; return { do => 'page', name => $name, url => $url, no_csp => JSON::PP::true, %o } };
my $xss_client = '<script>window.__pwned=5</script>';
my $w4 = walk('bad', [
	$page->('unknown', "$base/appguard/suspensions/999999?client=app1"),
	$page->('malformed', "$base/appguard/suspensions/12abc?client=app1"),
	$page->('negative', "$base/appguard/suspensions/-1?client=app1"),
	$page->('huge', "$base/appguard/suspensions/99999999999999999999999?client=app1"),
	$page->('bad_escape', "$base/appguard/suspensions/%E0%A4%A?client=app1"),
	$page->('foreign', "$base/appguard/suspensions/$evil_susp->{id}?client=app1"),
	$page->('xss_client', "$base/appguard/suspensions/$susp->{id}?client=" . uri_escape($xss_client)),
	$page->('reapproved', $error_uri),
	$page->('reapprove_hostile', "$base/appguard/reapprove/$evil_susp->{id}?client=" . uri_escape($evil_id)),
	$page->('reapprove_unknown', "$base/appguard/reapprove/1?client=" . uri_escape($xss_client)),
]);
my $b = $w4->{steps};
is_deeply([ map { $b->{$_}{status} } qw(unknown malformed negative huge bad_escape foreign xss_client) ],
	[ 404, 400, 400, 400, 400, 404, 404 ],
	'error_uri pages: unknown 404, malformed ids 400, another client\'s suspension 404, a markup client id 404');
unlike($b->{xss_client}{text}, qr/script|pwned/, '... which is not echoed');
like($b->{foreign}{text}, qr/no suspension of this app/, 'another client\'s suspension: the same page as an unknown id');
unlike($b->{foreign}{text}, qr/Evil|script|Harvest/i, '... showing nothing of it');
is_deeply([ map { [ $b->{$_}{scripts}, $b->{$_}{images}, $b->{$_}{pwned}, $b->{$_}{dialogs} ] } sort keys %$b ],
	[ map { [ 0, 0, undef, [] ] } sort keys %$b ], 'no bad-input page ran or injected anything');
is_deeply([ $b->{reapprove_hostile}{status}, $b->{reapprove_unknown}{status} ], [ 200, 404 ],
	'the re-approval route: a client without initiate_login_uri gets a page, an unknown client 404');
like($b->{reapprove_hostile}{text}, qr/Open \Q$evil_name\E and sign in again/, '... naming the app as text');
is($b->{reapproved}{status}, 200, 'the re-approved suspension\'s page still opens');
like($b->{reapproved}{h1}[0], qr/access to your data restored/, '... and says access is restored');
unlike($b->{reapproved}{text}, qr/Approve Example App again/, '... with no re-approval link');

# pruned: the history is gone, the page says nothing was found
my $pruned = jsql(q{SELECT appguard_prune('0 s')});
note 'appguard_prune: ' . $json->encode($pruned);
my $w5 = walk('pruned', [ $page->('pruned', $error_uri), $page->('pruned_hostile', "$base/appguard/suspensions/$evil_susp->{id}?client=" . uri_escape($evil_id)) ]);
is($w5->{steps}{pruned}{status}, 404, 'a pruned suspension\'s error_uri page: 404')
  or diag $w5->{steps}{pruned}{text};
is($w5->{steps}{pruned_hostile}{status}, 200, 'a suspension still in use is kept by the prune, its page opens');

ok(-s "$out/consent.png" && -s "$out/error_uri.png", "screenshots kept in $out");
note sprintf 'done in %.1f s (%d browser runs)', time - $t0, $walks;
ok($srv->alive, 'the server ran throughout');
my @errors = grep { /Error|error:/ } split /\n/, slurp_file($srv->log_file);
is_deeply(\@errors, [], 'the server logged no error');
$srv->stop;
done_testing();

sub uri_escape
{
	my ($s) = @_;
	$s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
	return $s;
}
