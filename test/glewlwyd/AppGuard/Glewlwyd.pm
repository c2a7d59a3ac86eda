package AppGuard::Glewlwyd;

# Glewlwyd (Debian's glewlwyd 2.7.5), an unmodified OAuth 2 / OpenID Connect
# server in C, run PostgreSQL-backed against a test cluster on a loopback
# address, and driven only through its HTTP API.  Used by
# test/t/050_glewlwyd.pl, test/t/051_glewlwyd_rotation.pl and
# test/bench/glewlwyd.sh.
#
#   my $g = AppGuard::Glewlwyd->new(
#       env  => $env,                      # an AppGuard::TestEnv: its dir and net
#       psql => sub { my ($db, $sql) = @_; ... },   # superuser SQL, returns stdout
#       pghost => $socket_dir, pgport => $port);
#   $g->create_database;                   # role and database glewlwyd, schema and data
#   $g->start;                             # plain HTTP on $net.250.1:4593
#   $g->configure(client_id => 'app1', redirect_uri => ..., ...);
#   my $rt = $g->consent_and_token(...)->{refresh_token};
#   my ($status, $body) = $g->refresh($rt);
#
# The server is a process group of its own with a pid file in the env's
# run directory (glewlwyd-<port>.pid; its files in <env dir>/glewlwyd-<port>), so the env's stop (and its watchdog, should the test die)
# stops it too.  Its configuration enables nothing that connects out: no
# TLS, no IP geolocation, no jwks or request URIs; it binds to one loopback
# address and talks to PostgreSQL over a Unix socket.

use strict;
use warnings;

use Carp;
use HTTP::Tiny;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);

my $json = JSON::PP->new->canonical;

our $SCHEMA = '/usr/share/doc/glewlwyd/database/init.postgre.sql.gz';
our $BINARY = '/usr/bin/glewlwyd';

# HTTP::Tiny writes a request's headers and its body separately; with
# Nagle's algorithm and the server's delayed ACK that costs ~40 ms per
# POST, which would drown what the benchmark measures.  TCP_NODELAY.
{
	package AppGuard::Glewlwyd::HTTP;
	use parent -norequire, 'HTTP::Tiny';
	use Socket qw(IPPROTO_TCP TCP_NODELAY);

	sub _open_handle
	{
		my ($self, @args) = @_;
		my $handle = $self->SUPER::_open_handle(@args);
		setsockopt($handle->{fh}, IPPROTO_TCP, TCP_NODELAY, 1) if $handle->{fh};
		return $handle;
	}
}

sub new
{
	my ($class, %args) = @_;
	my $env = $args{env} or croak 'env is required';
	my $self = bless {
		env      => $env,
		psql     => $args{psql} // croak('psql is required'),
		pghost   => $args{pghost} // croak('pghost is required'),
		pgport   => $args{pgport} // croak('pgport is required'),
		addr     => $args{addr} // $env->net . '.250.1',
		port     => $args{port} // 4593,
		db       => $args{db} // 'glewlwyd',
		role     => $args{role} // 'glewlwyd',
		dir      => undef,
		admin_pw => 'password',             # the default data's admin
		# never a proxy from the environment: only the loopback address
		http => AppGuard::Glewlwyd::HTTP->new(timeout => 15, max_redirect => 0, keep_alive => 1,
			proxy => undef, http_proxy => undef, https_proxy => undef),
	}, $class;
	# several instances may share an env (the benchmark runs two)
	$self->{name} = "glewlwyd-$self->{port}";
	$self->{dir} = $env->dir . "/$self->{name}";
	mkdir $self->{dir};
	$self->{base} = "http://$self->{addr}:$self->{port}/api";
	return $self;
}

sub addr { return $_[0]{addr} }
sub port { return $_[0]{port} }
sub base { return $_[0]{base} }
sub db   { return $_[0]{db} }
sub log_file { return "$_[0]{dir}/glewlwyd.log" }

sub sql
{
	my ($self, $sql) = @_;
	return $self->{psql}->($self->{db}, $sql);
}

# The role Glewlwyd connects as (not a superuser), its database with
# pgcrypto, Glewlwyd's schema and default data as that role, and appguard
# in the same database.
sub create_database
{
	my $self = shift;
	my ($db, $role) = @{$self}{qw(db role)};
	$self->{psql}->('postgres', "CREATE ROLE $role LOGIN");
	$self->{psql}->('postgres', "CREATE DATABASE $db OWNER $role");
	$self->{psql}->($db, 'CREATE EXTENSION pgcrypto');
	gunzip($SCHEMA => \my $schema) or croak "gunzip $SCHEMA: $GunzipError";
	$self->{psql}->($db, "SET client_min_messages = warning;\nSET ROLE $role;\n$schema");
	$self->{psql}->($db, 'CREATE EXTENSION appguard');
	return;
}

sub _config_text
{
	my $self = shift;
	my ($dir, $addr, $port) = @{$self}{qw(dir addr port)};
	my $conninfo = "host=$self->{pghost} port=$self->{pgport} dbname=$self->{db} user=$self->{role}";
	# use_secure_connection is left out: Glewlwyd 2.7.5 refuses to start
	# when it is present without certificate files, even set to false.
	return <<"CONF";
# Glewlwyd for the appguard tests: plain HTTP on one loopback address
port=$port
bind_address="$addr"
external_url="http://$addr:$port"
login_url="login.html"
api_prefix="api"
allow_origin="*"
log_mode="file"
log_level="INFO"
log_file="$dir/glewlwyd.log"
cookie_secure=0
cookie_same_site="empty"
session_expiration=3600
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
allow_multiple_user_per_session=true
login_api_enabled=true
plugin_api_run_enabled=""
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
hash_algorithm="SHA512"
database =
{
  type = "postgre"
  conninfo = "$conninfo"
};
CONF
}

# Starts the server and waits until it answers.
sub start
{
	my $self = shift;
	croak "$BINARY is not installed (apt-get install glewlwyd)" unless -x $BINARY;
	my $conf = "$self->{dir}/glewlwyd.conf";
	open my $fh, '>', $conf or croak "$conf: $!";
	print $fh $self->_config_text;
	close $fh;
	my $rundir = $self->{env}->dir . '/run';
	$_->flush for \*STDOUT, \*STDERR;
	my $pid = fork // croak "fork: $!";
	if ($pid == 0)
	{
		POSIX::setsid();
		open STDIN,  '<',  '/dev/null';
		open STDOUT, '>>', "$self->{dir}/stdout.log";
		open STDERR, '>&', \*STDOUT;
		exec($BINARY, '-c', $conf) or POSIX::_exit(127);
	}
	$self->{pid} = $pid;
	open my $pf, '>', "$rundir/$self->{name}.pid" or croak "$rundir/$self->{name}.pid: $!";
	print $pf "$pid\n";
	close $pf;
	my $deadline = time + 20;
	while (time < $deadline)
	{
		my $res = $self->{http}->get("$self->{base}/auth/scheme/");
		return $self if $res->{status} != 599;
		croak "glewlwyd exited: " . $self->_log_tail if waitpid($pid, POSIX::WNOHANG()) == $pid;
		sleep 0.05;
	}
	croak 'glewlwyd did not answer within 20 s: ' . $self->_log_tail;
}

# TERM, then KILL: a Glewlwyd whose database library deadlocked ignores TERM.
sub stop
{
	my $self = shift;
	my $pid = delete $self->{pid} or return;
	kill 'TERM', -$pid;
	my $deadline = time + 5;
	my $gone = 0;
	while (!$gone && time < $deadline)
	{
		$gone = waitpid($pid, POSIX::WNOHANG()) == $pid;
		sleep 0.05 unless $gone;
	}
	unless ($gone)
	{
		kill 'KILL', -$pid;
		waitpid($pid, 0);
	}
	unlink $self->{env}->dir . "/run/$self->{name}.pid";
	return;
}

sub alive
{
	my $self = shift;
	return $self->{pid} && waitpid($self->{pid}, POSIX::WNOHANG()) == 0;
}

sub _log_tail
{
	my $self = shift;
	my $text = '';
	for my $f ("$self->{dir}/stdout.log", $self->log_file)
	{
		next unless open my $fh, '<', $f;
		my @lines = <$fh>;
		$text .= join '', grep { defined } @lines[ -10 .. -1 ];
	}
	return $text;
}

# ------------------------------------------------------------------ HTTP

# One request: method, path below /api, and json => {...}, form => {...},
# cookie => 'name=value', basic => [user, password].  Returns
# ($status, $body, $headers, $seconds).
sub request
{
	my ($self, $method, $path, %o) = @_;
	my %headers;
	my $content;
	if ($o{json})
	{
		$headers{'content-type'} = 'application/json';
		$content = $json->encode($o{json});
	}
	elsif ($o{form})
	{
		$headers{'content-type'} = 'application/x-www-form-urlencoded';
		$content = $self->{http}->www_form_urlencode($o{form});
	}
	$headers{cookie} = $o{cookie} if $o{cookie};
	if ($o{basic})
	{
		require MIME::Base64;
		$headers{authorization} =
		  'Basic ' . MIME::Base64::encode_base64(join(':', @{ $o{basic} }), '');
	}
	my $start = time;
	my $res = $self->{http}->request($method, "$self->{base}$path",
		{ headers => \%headers, defined $content ? (content => $content) : () });
	my $took = time - $start;
	croak "glewlwyd: $method $path: $res->{content}" if $res->{status} == 599;
	return ($res->{status}, $res->{content}, $res->{headers}, $took);
}

# The session cookie of a password login.
sub login
{
	my ($self, $username, $password) = @_;
	my ($status, $body, $headers) =
	  $self->request(POST => '/auth/', json => { username => $username, password => $password });
	croak "login $username: $status $body" unless $status == 200;
	my @cookies = ref $headers->{'set-cookie'} ? @{ $headers->{'set-cookie'} } : ($headers->{'set-cookie'} // ());
	my ($cookie) = map { /^([^;]+)/ ? $1 : () } grep { /^GLEWLWYD2_SESSION_ID=/ } @cookies;
	croak "login $username: no session cookie" unless $cookie;
	return $cookie;
}

sub _ok
{
	my ($what, $status, $body) = @_;
	croak "$what: HTTP $status $body" unless $status == 200;
	return $body;
}

# Through the admin API: the OpenID Connect plugin instance "oidc" (see
# add_plugin; one_use => 'always' makes its refresh tokens one-time use),
# the scope "patient/*.read" (password required), a patient user, and
# confidential clients.
sub configure
{
	my ($self, %o) = @_;
	$self->add_plugin(name => 'oidc', one_use => $o{one_use});
	my $admin = $self->{admin} //= $self->login('admin', $self->{admin_pw});
	_ok('scope', $self->request(POST => '/scope/', cookie => $admin, json => {
		name => 'patient/*.read', display_name => 'Your health records',
		description => 'Read your health records', password_required => JSON::PP::true,
		password_max_age => 0, scheme => {} }));
	$self->add_user($o{username}, $o{password});
	return $self;
}

# An OpenID Connect plugin instance, its endpoints under /api/<name>/: HMAC
# signed tokens, authorization code and refresh token grants, RFC 7009
# revocation for the client itself.  one_use: Glewlwyd's
# "refresh-token-one-use" ('never', 'always' or 'client-driven'; left out
# when undef, Glewlwyd's default being 'never').  With one-time use, each
# refresh disables the token used (gpor_enabled = 0) and inserts a new row
# with the same gpor_jti and gpoc_id NULL; a disabled token presented
# again disables the enabled rows of its gpor_jti (the chain's newest).
sub add_plugin
{
	my ($self, %o) = @_;
	my $admin = $self->{admin} //= $self->login('admin', $self->{admin_pw});
	my $iss = "http://$self->{addr}:$self->{port}";
	_ok("plugin $o{name}", $self->request(POST => '/mod/plugin/', cookie => $admin, json => {
		module => 'oidc', name => $o{name}, display_name => "OpenID Connect ($o{name})",
		parameters => {
			iss => $iss, 'jwt-type' => 'sha', 'jwt-key-size' => '256',
			key => 'appguard-test-signing-key-0123456789',
			'access-token-duration' => 3600, 'refresh-token-duration' => 1209600,
			'code-duration' => 600, 'refresh-token-rolling' => JSON::PP::true,
			defined $o{one_use} ? ('refresh-token-one-use' => $o{one_use}) : (),
			'allow-non-oidc' => JSON::PP::true,
			'auth-type-code-enabled' => JSON::PP::true,
			'auth-type-refresh-enabled' => JSON::PP::true,
			map({ ("auth-type-$_-enabled" => JSON::PP::false) }
				qw(token id-token none password client device)),
			'introspection-revocation-allowed' => JSON::PP::true,
			'introspection-revocation-auth-scope' => [],
			'introspection-revocation-allow-target-client' => JSON::PP::true,
			scope => [],
		} }));
	return $self;
}

# A patient with the scopes of the tests.
sub add_user
{
	my ($self, $username, $password) = @_;
	my $admin = $self->{admin} //= $self->login('admin', $self->{admin_pw});
	_ok("user $username", $self->request(POST => '/user/', cookie => $admin, json => {
		username => $username, name => 'Pat Patient', password => $password,
		scope => [ 'g_profile', 'openid', 'patient/*.read' ], enabled => JSON::PP::true }));
	return $self;
}

# A confidential client; plugin => the plugin instance whose endpoints it
# uses (default "oidc").
sub add_client
{
	my ($self, %o) = @_;
	my $admin = $self->{admin} //= $self->login('admin', $self->{admin_pw});
	_ok("client $o{client_id}", $self->request(POST => '/client/', cookie => $admin, json => {
		client_id => $o{client_id}, name => $o{name}, password => $o{secret},
		confidential => JSON::PP::true, enabled => JSON::PP::true, scope => [],
		redirect_uri => [ $o{redirect_uri} ],
		authorization_type => [ 'code', 'refresh_token' ],
		# a confidential client must name how it authenticates at the token endpoint
		token_endpoint_auth_method => ['client_secret_basic'] }));
	$self->{clients}{ $o{client_id} } = {%o};
	return;
}

# The patient grants the scopes to the client and asks for a code
# (g_continue: the code instead of the login page); the client exchanges it.
# Returns { status, token => {...}, seconds } of the token request.
sub consent_and_token
{
	my ($self, $cookie, $client_id, $scope) = @_;
	$self->grant($cookie, $client_id, $scope);
	return $self->authorize_and_token($cookie, $client_id, $scope);
}

# The patient's approval of the client's scopes, which Glewlwyd remembers
# (what its consent page does when the patient approves).
sub grant
{
	my ($self, $cookie, $client_id, $scope) = @_;
	$scope //= 'openid patient/*.read';
	_ok('grant', $self->request(PUT => "/auth/grant/$client_id", cookie => $cookie,
		json => { scope => $scope }));
	return;
}

# An authorization-code flow without a consent page: Glewlwyd gives the
# code at once when the patient's approval of the scopes is remembered
# (grant).  Returns { status, token => {...}, seconds } of the token
# request.
sub authorize_and_token
{
	my ($self, $cookie, $client_id, $scope) = @_;
	my $c = $self->{clients}{$client_id} or croak "unknown client $client_id";
	my $plugin = $c->{plugin} // 'oidc';
	$scope //= 'openid patient/*.read';
	my $q = $self->{http}->www_form_urlencode({
		response_type => 'code', client_id => $client_id, redirect_uri => $c->{redirect_uri},
		state => 'st' . int(rand(1e9)), nonce => 'n' . int(rand(1e9)), scope => $scope });
	my ($status, $body, $headers) = $self->request(GET => "/$plugin/auth?g_continue&$q", cookie => $cookie);
	my $location = $headers->{location} // '';
	my ($code) = $location =~ /[?&]code=([^&]+)/;
	croak "authorization: HTTP $status, Location '$location'" unless $status == 302 && $code;
	($status, $body, undef, my $took) = $self->request(POST => "/$plugin/token",
		basic => [ $client_id, $c->{secret} ],
		form => { grant_type => 'authorization_code', code => $code, redirect_uri => $c->{redirect_uri} });
	my $token = $status == 200 ? $json->decode($body) : undef;
	return { status => $status, body => $body, token => $token, seconds => $took };
}

# A refresh at the token endpoint: ($status, $body, $seconds).
sub refresh
{
	my ($self, $client_id, $refresh_token) = @_;
	my $c = $self->{clients}{$client_id} or croak "unknown client $client_id";
	my $plugin = $c->{plugin} // 'oidc';
	my ($status, $body, undef, $took) = $self->request(POST => "/$plugin/token",
		basic => [ $client_id, $c->{secret} ],
		form => { grant_type => 'refresh_token', refresh_token => $refresh_token });
	return ($status, $body, $took);
}

# RFC 7009 revocation by the client: Glewlwyd disables the token itself.
sub revoke
{
	my ($self, $client_id, $refresh_token) = @_;
	my $c = $self->{clients}{$client_id} or croak "unknown client $client_id";
	my $plugin = $c->{plugin} // 'oidc';
	my ($status, $body) = $self->request(POST => "/$plugin/revoke",
		basic => [ $client_id, $c->{secret} ],
		form => { token => $refresh_token, token_type_hint => 'refresh_token' });
	return $status;
}

# The primary key of a refresh token's row, found the way Glewlwyd finds
# it: gpor_token_hash = '{SHA512}' || base64(sha512(token)).
sub refresh_token_id
{
	my ($self, $refresh_token) = @_;
	croak 'refresh token with unexpected characters' unless $refresh_token =~ /^[A-Za-z0-9_~.+\/=-]+$/;
	return $self->sql(
		"SELECT gpor_id FROM gpo_refresh_token WHERE gpor_token_hash = "
		  . "'{SHA512}' || translate(encode(sha512(convert_to('$refresh_token', 'UTF8')), 'base64'), E'\\n', '')");
}

1;
