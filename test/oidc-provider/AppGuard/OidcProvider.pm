package AppGuard::OidcProvider;

# The example auth server of test/oidc-provider (node-oidc-provider on
# Debian's Node.js) run for the tests: its database prepared in a test
# cluster, the server on a loopback address.  Used by
# test/t/070_oidc_provider.pl and test/oidc-provider/bench.pl.
#
#   AppGuard::OidcProvider::node_modules_current;   # node_modules from the lockfile?
#   my $s = AppGuard::OidcProvider->new(env => $env, psql => sub { my ($db, $sql) = @_; ... },
#       pghost => $dir, pgport => $port, db => 'oidc', role => 'oidc',
#       addr => "$net.250.2", port => 4600, appguard => 1, clients => [...], accounts => {...});
#   $s->create_database;       # role, database, schema.sql (and protect.sql with appguard)
#   $s->start;                 # waits until it listens; $s->base is its issuer URL
#   $s->stop;
#
# The server is a process group of its own with a pid file in the env's
# run directory (oidc-provider-<port>.pid), so the env's stop (and its
# watchdog, should the test die) stops it too.

use strict;
use warnings;

use Carp;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);

our $DIR  = abs_path(dirname(__FILE__) . '/..');
our $NODE = '/usr/bin/node';

my $json = JSON::PP->new->canonical;

sub _slurp
{
	my ($file) = @_;
	open my $fh, '<', $file or return '';
	local $/;
	return scalar <$fh>;
}

# Whether node_modules was installed from the current lockfile
# (test/install-deps.sh runs npm ci; a test never reaches the registry).
sub node_modules_current
{
	my $installed = "$DIR/node_modules/.package-lock.json";
	return -e $installed && (stat "$DIR/package-lock.json")[9] <= (stat $installed)[9];
}

sub new
{
	my ($class, %a) = @_;
	my $self = bless {
		env      => $a{env} // croak('env is required'),
		psql     => $a{psql} // croak('psql is required'),
		pghost   => $a{pghost} // croak('pghost is required'),
		pgport   => $a{pgport} // croak('pgport is required'),
		db       => $a{db} // 'oidc',
		role     => $a{role} // 'oidc',
		addr     => $a{addr} // $a{env}->net . '.250.2',
		port     => $a{port} // 4600,
		appguard => $a{appguard} // 1,
		refresh_check => $a{refresh_check} // 1,
		clients  => $a{clients} // [],
		accounts => $a{accounts} // {},
	}, $class;
	$self->{name} = "oidc-provider-$self->{port}";
	$self->{dir}  = $self->{env}->dir . "/$self->{name}";
	mkdir $self->{dir};
	$self->{base} = "http://$self->{addr}:$self->{port}";
	return $self;
}

sub base     { return $_[0]{base} }
sub addr     { return $_[0]{addr} }
sub db       { return $_[0]{db} }
sub log_file { return "$_[0]{dir}/server.log" }
sub sql      { my ($self, $sql) = @_; return $self->{psql}->($self->{db}, $sql) }

# The role (not a superuser) and its database with schema.sql; with
# appguard, protect.sql as a superuser.  Returns appguard_protect's result
# (decoded), or undef.
sub create_database
{
	my $self = shift;
	my ($db, $role) = @{$self}{qw(db role)};
	$self->{psql}->('postgres', "CREATE ROLE $role LOGIN");
	$self->{psql}->('postgres', "CREATE DATABASE $db OWNER $role");
	$self->{psql}->($db, "SET ROLE $role;\n" . _slurp("$DIR/schema.sql"));
	return undef unless $self->{appguard};
	my $protect = _slurp("$DIR/protect.sql") =~ s/:"role"/"$role"/gr;
	my @lines = split /\n/, $self->{psql}->($db, $protect);
	return $json->decode($lines[-1]);
}

sub start
{
	my $self = shift;
	my $config = {
		issuer => $self->{base}, listen => { host => $self->{addr}, port => $self->{port} },
		appguard => $self->{appguard} ? JSON::PP::true : JSON::PP::false,
		refresh_check => $self->{refresh_check} ? JSON::PP::true : JSON::PP::false,
		cookie_keys => ['appguard-test-cookie-key'],
		clients => $self->{clients}, accounts => $self->{accounts},
	};
	my $conf = "$self->{dir}/config.json";
	open my $cf, '>', $conf or croak "$conf: $!";
	print $cf $json->encode($config);
	close $cf;
	my %pgenv = (PGHOST => $self->{pghost}, PGPORT => $self->{pgport}, PGDATABASE => $self->{db},
		PGUSER => $self->{role});
	$_->flush for \*STDOUT, \*STDERR;
	my $pid = fork // croak "fork: $!";
	if ($pid == 0)
	{
		POSIX::setsid();
		open STDIN,  '<',  '/dev/null';
		open STDOUT, '>>', $self->log_file;
		open STDERR, '>&', \*STDOUT;
		chdir $DIR;
		@ENV{ keys %pgenv } = values %pgenv;
		exec($NODE, 'server.js', $conf) or POSIX::_exit(127);
	}
	$self->{pid} = $pid;
	my $pidfile = $self->{env}->dir . "/run/$self->{name}.pid";
	open my $pf, '>', $pidfile or croak "$pidfile: $!";
	print $pf "$pid\n";
	close $pf;
	my $deadline = time + 30;
	while (time < $deadline)
	{
		return $self if _slurp($self->log_file) =~ /^listening on /m;
		croak "oidc-provider exited:\n" . _slurp($self->log_file)
		  if waitpid($pid, POSIX::WNOHANG()) == $pid;
		sleep 0.05;
	}
	croak "oidc-provider did not listen within 30 s:\n" . _slurp($self->log_file);
}

sub alive
{
	my $self = shift;
	return $self->{pid} && waitpid($self->{pid}, POSIX::WNOHANG()) == 0;
}

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

1;
