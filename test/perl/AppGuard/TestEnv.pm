package AppGuard::TestEnv;

# The network appguard's tests measure: a test PKI made at run time with the
# openssl command, real TLS servers (one nginx), a real authoritative DNS
# server (knotd) and scripted fault servers (test/env/faultd.py) for the few
# faults no real server produces.  Everything listens on loopback addresses
# only, runs as the calling user and lives in one directory.
#
# Every process is started in its own session with a pid file in DIR/run;
# stop() (called from DESTROY and END as well) kills those sessions, and a
# watchdog process does the same if the owning process dies without
# cleaning up.  POD at the end of the file.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Temp ();
use IO::Handle ();
use IO::Socket::INET ();
use IPC::Run ();
use JSON::PP ();
use POSIX qw(WNOHANG strftime);
use Scalar::Util qw(refaddr weaken);
use Storable ();
use Time::HiRes qw(sleep time);

my $ENV_DIR = abs_path(dirname(__FILE__) . '/../../env');
my $PYTHON  = '/usr/bin/python3';

my %POLICY_OID = (
	DV => '2.23.140.1.2.1',
	OV => '2.23.140.1.2.2',
	IV => '2.23.140.1.2.3',
	EV => '2.23.140.1.1',);

my %KEYGEN = (
	rsa1024 => [ '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024' ],
	rsa2048 => [ '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048' ],
	rsa4096 => [ '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:4096' ],
	ec256 => [ '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256' ],
	ec384 => [ '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384' ],);

my %CHAIN_MODE = map { $_ => 1 } qw(full leaf_only reversed with_root);
my %OCSP_STATUS = map { $_ => 1 } qw(good revoked unknown);
my %FAULT_KIND = map { $_ => 1 } qw(stall garbage close_after_hello reset slow);

# Envs created by this process, stopped at exit even if never destroyed.
my %LIVE;

END
{
	local $?;    # keep the test's exit status
	$_->_stop_if_owner for grep { defined } values %LIVE;
}

# ---------------------------------------------------------------- setup

sub new
{
	my ($class, %args) = @_;
	my $net = $args{net} // $ENV{AG_NET} // '127.77';
	my ($octet) = $net =~ /^127\.(\d{1,3})$/;
	croak "net must be 127.N, not '$net'" unless defined $octet && $octet <= 255;
	my $self = bless {
		net       => $net,
		tls_port  => $args{tls_port} // $ENV{AG_TLS_PORT} // 8443,
		# ::1 is shared by all runs: a port per net keeps them apart
		tls6_port => $args{tls6_port} // $ENV{AG_TLS6_PORT} // 9000 + $octet,
		dns_port  => $args{dns_port} // $ENV{AG_DNS_PORT} // 5353,
		dir       => _make_dir($args{dir}),
		temporary => !defined $args{dir} && !$ENV{AG_KEEP},
		detached  => $args{detached} ? 1 : 0,
		owner     => $$,
		next_addr => 0,
		hosts     => [],
		certs     => {},
		cas       => {},
		zones     => {},
		gen       => 0,
		faultd    => 0,
		spawned   => [],
	}, $class;
	make_path(map { "$self->{dir}/$_" }
		  qw(run log pki/certs nginx/tmp nginx/chains knot/zones knot/db faultd));
	croak "directory name too long for knotd's control socket: $self->{dir}"
	  if length($self->_knot_socket) > 100;
	$self->_init_pki;
	$self->_register;
	return $self;
}

# A detached env (agenv) outlives the process that made it; load() gets it
# back from its directory.
sub load
{
	my ($class, $dir) = @_;
	my $self = Storable::retrieve("$dir/state") or croak "no env in $dir";
	return bless $self, $class;
}

sub save
{
	my $self = shift;
	Storable::nstore({%$self}, "$self->{dir}/state");
	return;
}

sub _make_dir
{
	my ($dir) = @_;
	return File::Temp::tempdir('agenv_XXXX', TMPDIR => 1,
		CLEANUP => !$ENV{AG_KEEP})
	  unless defined $dir;
	make_path($dir);
	return abs_path($dir);
}

sub _register
{
	my $self = shift;
	weaken($LIVE{ refaddr $self} = $self) unless $self->{detached};
	return;
}

sub DESTROY
{
	my $self = shift;
	local ($?, $@);
	$self->_stop_if_owner;
	delete $LIVE{ refaddr $self};
	return;
}

# A forked child (or a detached env's creator) must not stop the servers.
sub _stop_if_owner
{
	my $self = shift;
	$self->stop if $self->{owner} == $$ && !$self->{detached};
	return;
}

# ---------------------------------------------------------------- accessors

sub dir       { return $_[0]{dir} }
# test/sanitize.sh runs the servers under valgrind, 20 to 50 times slower,
# and sets AG_UNDER_VALGRIND=1: the tests multiply the upper bounds they put
# on time (deadlines and margins that say "does not hang", never what a
# test is about) by this factor; 1 otherwise.
sub slowdown { return $ENV{AG_UNDER_VALGRIND} ? 10 : 1 }

sub net       { return $_[0]{net} }
sub tls_port  { return $_[0]{tls_port} }
sub tls6_port { return $_[0]{tls6_port} }
sub dns_port  { return $_[0]{dns_port} }
sub dns_addr  { return "$_[0]{net}.0.53" }
sub ca_file   { return $_[0]->ca_cert('root') }

sub ca_cert
{
	my ($self, $id) = @_;
	my $ca = $self->{cas}{$id} or croak "unknown CA '$id'";
	return $ca->{cert};
}

sub dns_servers_guc
{
	my $self = shift;
	return $self->dns_addr . ':' . $self->dns_port;
}

sub port_for
{
	my ($self, $addr) = @_;
	return $addr =~ /:/ ? $self->{tls6_port} : $self->{tls_port};
}

# The settings of a cluster that measures this environment's hosts.  The
# cluster preloads appguard, the supported set-up, unless preload => 0.
sub postgresql_conf
{
	my ($self, %o) = @_;
	my $ca = $self->ca_file =~ s/'/''/gr;
	return join '',
	  (($o{preload} // 1) ? "shared_preload_libraries = 'appguard'\n" : ''),
	  "appguard.dns_servers = '" . $self->dns_servers_guc . "'\n",
	  "appguard.ca_file = '$ca'\n",
	  "appguard.allowed_ports = '$self->{tls_port},$self->{tls6_port}'\n",
	  "appguard.allow_private_addresses = on\n";
}

sub _ctl_addr        { return "$_[0]{net}.0.1" }
sub _silent_dns_addr { return "$_[0]{net}.0.54" }
sub _knot_socket     { return "$_[0]{dir}/run/knot.sock" }

# Hosts get $net.1.1, $net.1.2, ... $net.1.254, $net.2.1, ...; $net.0.x is
# kept for the environment's own servers.
sub _next_addr
{
	my $self = shift;
	my $n    = $self->{next_addr}++;
	my $hi   = 1 + int($n / 254);
	croak "no address left in $self->{net}.0.0/16" if $hi > 255;
	return "$self->{net}.$hi." . (1 + $n % 254);
}

sub _check_addr
{
	my ($addr) = @_;
	croak "'$addr' is not a loopback address (127.0.0.0/8 or ::1)"
	  unless $addr =~ /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/ || $addr eq '::1';
	return $addr;
}

sub _hostport
{
	my ($self, $addr) = @_;
	my $host = $addr =~ /:/ ? "[$addr]" : $addr;
	return "$host:" . $self->port_for($addr);
}

# ---------------------------------------------------------------- PKI

sub _init_pki
{
	my $self = shift;
	my $pki  = "$self->{dir}/pki";
	_write_file("$pki/req.cnf",
		"[req]\ndistinguished_name = dn\nstring_mask = utf8only\nutf8 = yes\n[dn]\n");
	_write_file("$pki/ca_ext.cnf", <<'EOF');
[root]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[intermediate]
basicConstraints = critical,CA:true,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ocsp_signer]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = OCSPSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
	_genkeys(map { [ 'rsa2048', "$pki/$_/ca.key" ] }
		  qw(root intermediate intermediate2 untrusted_root untrusted));
	$self->_make_ca('root', 'AppGuard Test CA', 'AppGuard Test Root CA');
	$self->_make_ca('intermediate', 'AppGuard Test CA',
		'AppGuard Test Issuing CA 1', 'root');
	$self->_make_ca('intermediate2', 'AppGuard Test CA',
		'AppGuard Test Issuing CA 2', 'root');
	$self->_make_ca('untrusted_root', 'Untrusted Test CA', 'Untrusted Root CA');
	$self->_make_ca('untrusted', 'Untrusted Test CA', 'Untrusted Issuing CA',
		'untrusted_root');
	$self->_ca_database('self');    # signs self-signed leaves
	return;
}

# An openssl ca database: index, serial, config.  A random first serial
# keeps serial numbers distinct across runs.
sub _ca_database
{
	my ($self, $id) = @_;
	my $dir = "$self->{dir}/pki/$id";
	make_path("$dir/issued");
	_write_file("$dir/index.txt", '');
	_write_file("$dir/serial", sprintf("%X%015X\n", 1 + int(rand 7), int(rand 2**52)));
	_write_file("$dir/ca.cnf", <<"EOF");
[ca]
default_ca = this_ca
[this_ca]
dir = $dir
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir/issued
certificate = \$dir/ca.crt
private_key = \$dir/ca.key
default_md = sha256
policy = any_dn
unique_subject = no
copy_extensions = none
email_in_dn = no
[any_dn]
countryName = optional
stateOrProvinceName = optional
localityName = optional
organizationName = optional
organizationalUnitName = optional
commonName = optional
EOF
	return $self->{cas}{$id} = {
		id    => $id,
		dir   => $dir,
		cert  => "$dir/ca.crt",
		key   => "$dir/ca.key",
		chain => [],           # CA certificates a server sends above a leaf
		root  => undef,
	};
}

sub _make_ca
{
	my ($self, $id, $o, $cn, $parent) = @_;
	my $ca = $self->_ca_database($id);
	$self->_csr($ca->{key}, "/C=US/O=$o/CN=$cn", "$ca->{dir}/ca.csr");
	if ($parent)
	{
		$self->_sign($parent, "$ca->{dir}/ca.csr", $ca->{cert},
			"$self->{dir}/pki/ca_ext.cnf", 'intermediate', -3650, 3650);
		$ca->{root} = $parent;
		$ca->{chain} = [ $ca->{cert} ];
	}
	else
	{
		$self->_sign($id, "$ca->{dir}/ca.csr", $ca->{cert},
			"$self->{dir}/pki/ca_ext.cnf", 'root', -3650, 7300, $ca->{key});
		$ca->{root} = $id;
	}
	return;
}

# RSA key generation takes most of the setup time: several at once use
# every core.  Takes [type, file] pairs.
sub _genkeys
{
	my (@keys) = @_;
	while (my @batch = splice @keys, 0, 4)
	{
		my @jobs = map {
			my ($type, $file) = @$_;
			my $args = $KEYGEN{$type} or croak "unknown key type '$type'";
			make_path(dirname($file));
			IPC::Run::start([ 'openssl', 'genpkey', @$args, '-out', $file ],
				'<', \undef, '>', \my $out, '2>', \my $err);
		} @batch;
		$_->finish or croak 'openssl genpkey failed' for @jobs;
	}
	return;
}

sub _csr
{
	my ($self, $key, $subject, $out) = @_;
	_run('openssl', 'req', '-new', '-config', "$self->{dir}/pki/req.cnf",
		'-key', $key, '-subj', $subject, '-out', $out);
	return;
}

# Dates are days relative to now (may be negative or fractional) or an
# absolute YYYYMMDDHHMMSSZ.
sub _date
{
	my ($when) = @_;
	return $when if $when =~ /^\d{14}Z$/;
	croak "bad date '$when': days from now or YYYYMMDDHHMMSSZ"
	  unless $when =~ /^[-+]?\d+(\.\d+)?$/;
	return strftime('%Y%m%d%H%M%SZ', gmtime(time + $when * 86400));
}

# openssl ca, not x509 -req: only ca can set both validity dates.  With
# $self_key the request is signed with its own key (a self-signed cert).
sub _sign
{
	my ($self, $ca_id, $csr, $out, $extfile, $section, $from, $to, $self_key) = @_;
	my $ca = $self->{cas}{$ca_id};
	_run('openssl', 'ca', '-batch', '-notext', '-config', "$ca->{dir}/ca.cnf",
		'-in', $csr, '-out', $out,
		'-startdate', _date($from), '-enddate', _date($to),
		'-extfile', $extfile, '-extensions', $section,
		($self_key ? ('-selfsign', '-keyfile', $self_key) : ()));
	return;
}

sub cert
{
	my ($self, $name, %o) = @_;
	return ($self->certs($name => \%o))[0];
}

# Several certs at once, their keys made concurrently: NAME => {opts}, ...
sub certs
{
	my ($self, @specs) = @_;
	my @names;
	my @fresh;
	while (my ($name, $o) = splice @specs, 0, 2)
	{
		croak "bad cert name '$name'" unless $name =~ /^[\w.-]+$/;
		push @names, [ $name, $o ];
		push @fresh, [ $o->{key} // 'rsa2048', "$self->{dir}/pki/certs/$name.key" ]
		  unless defined $o->{key_of};
	}
	_genkeys(@fresh);
	return map { $self->_issue($_->[0], %{ $_->[1] }) } @names;
}

# Issues cert NAME; its key is already made, unless the cert has key_of.
sub _issue
{
	my ($self, $name, %o) = @_;
	my $issuer = $o{issuer} // 'intermediate';
	croak "unknown issuer '$issuer'" unless $self->{cas}{$issuer};
	my $cn = exists $o{cn} ? $o{cn} : $o{san} ? $o{san}[0] : $name;
	my @san = @{ $o{san} // [ $cn // () ] };
	croak "cert '$name' needs a cn or a san" unless defined $cn || @san;

	my $base = "$self->{dir}/pki/certs/$name";
	my $key_type = $o{key} // 'rsa2048';
	if (defined $o{key_of})    # a renewal that keeps the key (same SPKI)
	{
		my $old = $self->{certs}{ $o{key_of} } or croak "unknown cert '$o{key_of}'";
		$key_type = $old->{key_type};
		_write_file("$base.key", _slurp($old->{key})) unless $o{key_of} eq $name;
	}
	$self->_csr("$base.key", _subject(%o, cn => $cn), "$base.csr");
	_write_file("$base.ext", _leaf_ext(\@san, $o{policies}, $key_type, !defined $cn));
	$self->_sign($issuer, "$base.csr", "$base.crt", "$base.ext", 'leaf',
		$o{not_before} // -1, $o{not_after} // 90,
		$issuer eq 'self' ? "$base.key" : undef);

	my $ca = $self->{cas}{$issuer};
	_write_file("$base.chain.pem", _slurp("$base.crt", @{ $ca->{chain} }));
	$self->{certs}{$name} = {
		name     => $name,
		key      => "$base.key",
		key_type => $key_type,
		cert     => "$base.crt",
		chain    => "$base.chain.pem",
		issuer   => $issuer,
		ocsp     => undef,
	};
	my $ocsp = $o{revoked} ? 'revoked' : $o{ocsp};
	$self->_ocsp_response($name, $ocsp) if $ocsp;
	return { %{ $self->{certs}{$name} } };
}

sub revoke
{
	my ($self, $name) = @_;
	$self->_ocsp_response($name, 'revoked');
	return { %{ $self->{certs}{$name} } };
}

sub _subject
{
	my (%o) = @_;
	my @parts = (C => $o{c}, ST => $o{st}, L => $o{l}, O => $o{o},
		OU => $o{ou}, CN => $o{cn});
	my $subject = '';
	while (my ($k, $v) = splice @parts, 0, 2)
	{
		$subject .= "/$k=" . ($v =~ s{([/+\\])}{\\$1}gr) if defined $v;
	}
	return $subject || '/';
}

sub _leaf_ext
{
	my ($san, $policies, $key_type, $san_critical) = @_;
	my $usage = 'critical,digitalSignature'
	  . ($key_type =~ /^rsa/ ? ',keyEncipherment' : '');
	my $ext = "[leaf]\nbasicConstraints = critical,CA:false\n"
	  . "keyUsage = $usage\nextendedKeyUsage = serverAuth\n"
	  . "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n";
	# RFC 5280: with an empty subject the SAN extension must be critical.
	$ext .= 'subjectAltName = ' . ($san_critical ? 'critical,' : '')
	  . join(',', map { "DNS:$_" } @$san) . "\n"
	  if @$san;
	my @oids = map { $POLICY_OID{ uc $_ } // $_ } @{ $policies // [] };
	$ext .= 'certificatePolicies = ' . join(', ', @oids) . "\n" if @oids;
	return $ext;
}

# An OCSP response made offline from the issuing CA's own database, signed
# by a delegated responder, for nginx to staple.  'revoked' first revokes
# the certificate in that database; 'unknown' answers from an empty one.
sub _ocsp_response
{
	my ($self, $name, $status) = @_;
	my $c = $self->{certs}{$name} or croak "unknown cert '$name'";
	croak "unknown OCSP status '$status'" unless $OCSP_STATUS{$status};
	croak "self-signed cert '$name' has no OCSP responder" if $c->{issuer} eq 'self';
	my $ca = $self->{cas}{ $c->{issuer} };
	my $base = "$self->{dir}/pki/certs/$name";

	if ($status eq 'revoked' && !$c->{revoked})
	{
		_run('openssl', 'ca', '-config', "$ca->{dir}/ca.cnf", '-revoke', $c->{cert},
			'-crl_reason', 'keyCompromise');
		$c->{revoked} = 1;
	}
	my $index = "$ca->{dir}/index.txt";
	if ($status eq 'unknown')
	{
		$index = "$base.empty-index.txt";
		_write_file($index, '');
	}
	my $responder = $self->_ocsp_responder($ca);
	_run('openssl', 'ocsp', '-issuer', $ca->{cert}, '-cert', $c->{cert},
		'-no_nonce', '-reqout', "$base.ocsp-req.der");
	_run('openssl', 'ocsp', '-index', $index, '-CA', $ca->{cert},
		'-rsigner', "$responder.crt", '-rkey', "$responder.key",
		'-reqin', "$base.ocsp-req.der", '-respout', "$base.ocsp.der", '-ndays', 7);
	$c->{ocsp} = "$base.ocsp.der";
	return;
}

sub _ocsp_responder
{
	my ($self, $ca) = @_;
	my $base = "$ca->{dir}/ocsp";
	return $base if -e "$base.crt";
	_genkeys([ 'ec256', "$base.key" ]);    # its type matters to nobody
	$self->_csr("$base.key", "/CN=OCSP Responder $ca->{id}", "$base.csr");
	$self->_sign($ca->{id}, "$base.csr", "$base.crt",
		"$self->{dir}/pki/ca_ext.cnf", 'ocsp_signer', -1, 365);
	return $base;
}

# ---------------------------------------------------------------- TLS hosts

sub tls_host
{
	my ($self, $hostname, %o) = @_;
	my $chain = $o{chain} // 'full';
	croak "unknown chain mode '$chain'" unless $CHAIN_MODE{$chain};
	my $cert = $o{cert};
	unless ($o{plain_http})
	{
		$self->cert($hostname) if !defined $cert && !$self->{certs}{$hostname};
		$cert //= $hostname;
		my $c = $self->{certs}{$cert} or croak "unknown cert '$cert'";
		croak "cert '$cert' has no OCSP response to staple"
		  if $o{ocsp_staple} && !$c->{ocsp};
	}
	my $addr = _check_addr($o{addr} // $self->_next_addr);
	my $host = {
		name        => $hostname,
		addr        => $addr,
		cert        => $cert,
		chain       => $chain,
		ocsp_staple => $o{ocsp_staple},
		plain_http  => $o{plain_http},
		protocols   => $o{protocols} // 'TLSv1.2 TLSv1.3',
	};
	# Same address and name: this replaces the host (a renewed cert, say),
	# in place, as the first name on an address is nginx's default.
	my $hosts = $self->{hosts};
	my ($i) = grep { $hosts->[$_]{addr} eq $addr && _same($hosts->[$_]{name}, $hostname) }
	  0 .. $#$hosts;
	$hosts->[ $i // @$hosts ] = $host;
	return $addr;
}

sub hosts
{
	my $self = shift;
	return map { { %$_, port => $self->port_for($_->{addr}) } } @{ $self->{hosts} };
}

sub addr_of
{
	my ($self, $hostname) = @_;
	my ($host) = grep { _same($_->{name}, $hostname) } @{ $self->{hosts} };
	croak "no host '$hostname'" unless $host;
	return $host->{addr};
}

sub _same
{
	my ($x, $y) = @_;
	return defined $x ? defined $y && $x eq $y : !defined $y;
}

# The PEM file a host sends: leaf first (nginx insists), then CA certs.
sub _chain_file
{
	my ($self, $host) = @_;
	my $c  = $self->{certs}{ $host->{cert} };
	my $ca = $self->{cas}{ $c->{issuer} };
	my @cas = @{ $ca->{chain} };
	my $root = $ca->{root} && $self->{cas}{ $ca->{root} }{cert};
	my %pems = (
		full      => [@cas],
		leaf_only => [],
		reversed  => [ $root, reverse @cas ],
		with_root => [ @cas, $root ],);
	croak "chain '$host->{chain}' needs an intermediate CA"
	  if $host->{chain} eq 'reversed' && !@cas;
	croak "chain '$host->{chain}' needs a root CA"
	  if $host->{chain} ne 'full' && $host->{chain} ne 'leaf_only' && !$root;
	my $file = "$self->{dir}/nginx/chains/$c->{name}.$host->{chain}.pem";
	_write_file($file, _slurp($c->{cert}, @{ $pems{ $host->{chain} } }));
	return $file;
}

sub _nginx_server
{
	my ($self, $host) = @_;
	my $listen = $self->_hostport($host->{addr});
	my $name = $host->{name} // '_';
	my $body = "        location / { return 200 \"$name\\n\"; }\n";
	return "    server {\n        listen $listen;\n        server_name $name;\n$body    }\n"
	  if $host->{plain_http};
	my $c = $self->{certs}{ $host->{cert} };
	croak "cert '$c->{name}' has no OCSP response to staple (reissued?)"
	  if $host->{ocsp_staple} && !$c->{ocsp};
	my $staple = $host->{ocsp_staple}
	  ? "        ssl_stapling on;\n        ssl_stapling_file $c->{ocsp};\n"
	  : '';
	return "    server {\n        listen $listen ssl;\n        server_name $name;\n"
	  . "        ssl_protocols $host->{protocols};\n"
	  . '        ssl_certificate ' . $self->_chain_file($host) . ";\n"
	  . "        ssl_certificate_key $c->{key};\n$staple$body    }\n";
}

sub _nginx_conf
{
	my $self  = shift;
	my $d     = "$self->{dir}/nginx";
	my $files = 2 * @{ $self->{hosts} } + 1024;
	my $ctl   = $self->_ctl_addr . ":$self->{tls_port}";
	my $servers = join '', map { $self->_nginx_server($_) } @{ $self->{hosts} };
	return <<"EOF";
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log notice;
worker_rlimit_nofile $files;
worker_shutdown_timeout 1s;
events { worker_connections $files; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    # Debian builds OpenSSL with security level 2, which refuses to load
    # RSA-1024 keys or speak TLS 1.1.  Weak servers must exist so that the
    # probe can record them; clients still choose what they accept.
    ssl_ciphers DEFAULT:\@SECLEVEL=0;
    # Reports the config generation, so reload() knows when it is live.
    server { listen $ctl; location / { return 200 "generation $self->{gen}\\n"; } }
$servers}
EOF
}

sub _write_nginx_conf
{
	my $self = shift;
	my $d    = "$self->{dir}/nginx";
	$self->{gen}++;
	_write_file("$d/nginx.conf", $self->_nginx_conf);
	_run(_which('nginx'), '-t', '-q', '-p', $d, '-c', "$d/nginx.conf", '-e', "$d/error.log");
	return;
}

sub _nginx_generation
{
	my $self = shift;
	my $sock = IO::Socket::INET->new(
		PeerAddr => $self->_ctl_addr,
		PeerPort => $self->{tls_port},
		Timeout  => 1) or return -1;
	print $sock "GET / HTTP/1.0\r\n\r\n";
	my $reply = do { local $/; <$sock> } // '';
	return $reply =~ /generation (\d+)/ ? $1 : -1;
}

sub _wait_nginx
{
	my $self = shift;
	$self->_wait_for("nginx generation $self->{gen}",
		sub { $self->_nginx_generation == $self->{gen} }, 'nginx');
	return;
}

sub reload
{
	my $self = shift;
	my $pid = $self->_running('nginx') or croak 'nginx is not running';
	$self->_write_nginx_conf;
	my @old_workers = map { $_->{pid} } grep { $_->{ppid} == $pid } _live_processes();
	kill 'HUP', $pid;
	$self->_wait_nginx;
	# Until they exit, old workers may still accept connections and serve
	# the old config (worker_shutdown_timeout bounds the wait).
	$self->_wait_for('old nginx workers to exit',
		sub { !grep { kill 0, $_ } @old_workers }, 'nginx');
	return;
}

# ---------------------------------------------------------------- DNS

sub _origin
{
	my ($origin) = @_;
	$origin = lc($origin =~ s/\.$//r);
	croak "bad zone origin '$origin'" unless $origin =~ /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;
	return $origin;
}

sub zone
{
	my ($self, $origin, $records) = @_;
	$origin = _origin($origin);
	my $z = $self->{zones}{$origin} //= { serial => 0 };
	$z->{serial}++;
	$z->{records} = [@$records];
	$z->{broken}  = 0;
	_write_file($self->_zone_file($origin), $self->_zone_text($origin));
	if ($self->_running('knot'))
	{
		$self->_knot_reload;
		$self->_wait_zone($origin);
	}
	return $z->{serial};
}

sub zone_update
{
	my ($self, $origin, $records) = @_;
	croak "no zone '$origin'" unless $self->{zones}{ _origin($origin) };
	return $self->zone($origin, $records);
}

# knotd answers SERVFAIL for a configured zone it could not load.
sub servfail_zone
{
	my ($self, $origin) = @_;
	$origin = _origin($origin);
	my $z = $self->{zones}{$origin} //= { serial => 0 };
	my $was_loaded = $z->{records} && !$z->{broken};
	$z->{broken} = 1;
	_write_file($self->_zone_file($origin),
		"; not a zone file, on purpose: knotd fails to load it\nbroken zone\n");
	return unless $self->_running('knot');
	$self->_knot_reload;
	# A reload keeps a zone that was loaded; expiring it drops its contents.
	$self->_knotc('zone-purge', '-f', $origin, '+expire') if $was_loaded;
	$self->_wait_zone($origin);
	return;
}

sub _zone_file { return "$_[0]{dir}/knot/zones/$_[1].zone" }

sub _zone_text
{
	my ($self, $origin) = @_;
	my $z = $self->{zones}{$origin};
	my $text = "\$ORIGIN $origin.\n\$TTL 60\n"
	  . "\@ SOA ns.agenv.test. hostmaster.agenv.test. $z->{serial} 3600 600 86400 60\n";
	# Every zone needs NS records; an out-of-zone name needs no glue.
	$text .= "\@ NS ns.agenv.test.\n"
	  unless grep { _is_apex_ns($origin, $_) } @{ $z->{records} };
	return $text . join('', map { "$_\n" } @{ $z->{records} });
}

sub _is_apex_ns
{
	my ($origin, $line) = @_;
	return 0 if $line =~ /^\s/;    # owner inherited from the line above
	my ($owner, @rest) = split ' ', $line;
	shift @rest while @rest && $rest[0] =~ /^(\d+|IN)$/i;    # TTL, class
	return lc($owner) =~ /^(\@|\Q$origin\E\.)$/ && uc($rest[0] // '') eq 'NS';
}

sub _knot_conf
{
	my $self = shift;
	my $k = "$self->{dir}/knot";
	my $zones = join '', map { "  - domain: $_\n" } sort keys %{ $self->{zones} };
	return <<"EOF" . ($zones ? "zone:\n$zones" : '');
server:
    rundir: "$k"
    listen: ${\ $self->dns_addr}\@$self->{dns_port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$k/db"
control:
    listen: "${\ $self->_knot_socket}"
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: "$k/zones"
    file: "%s.zone"
    # never write back into the zone files, keep no journal
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
EOF
}

sub _knotc
{
	my ($self, @args) = @_;
	return _run(_which('knotc'), '-s', $self->_knot_socket, @args);
}

# Reloading the configuration also reloads every zone file that changed.
sub _knot_reload
{
	my $self = shift;
	_write_file("$self->{dir}/knot/knot.conf", $self->_knot_conf);
	$self->_knotc('reload');
	return;
}

# The zone is live once knotd serves its current serial (or SERVFAIL, for
# a zone broken on purpose).
sub _wait_zone
{
	my ($self, $origin) = @_;
	my $z = $self->{zones}{$origin};
	$self->_wait_for(
		"zone $origin serial $z->{serial}",
		sub {
			my $r = $self->dns_query($origin, 'SOA');
			return $r->{rcode} eq 'SERVFAIL' if $z->{broken};
			return $r->{rcode} eq 'NOERROR'
			  && grep { /\sSOA\s+\S+\s+\S+\s+$z->{serial}\s/ } @{ $r->{answer} };
		},
		'knot');
	return;
}

# One query with kdig to ADDR (default: the knotd server); returns
# { rcode => 'NOERROR' | 'NXDOMAIN' | ... | 'TIMEOUT', answer => [RR lines] }.
sub dns_query
{
	my ($self, $name, $type, %o) = @_;
	my $server = $o{server} // $self->dns_servers_guc;
	my ($addr, $port) = $server =~ /^(.*):(\d+)$/ or croak "bad server '$server'";
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'kdig', '@' . _check_addr($addr), '-p', $port,
			'+timeout=' . ($o{timeout} // 1), '+retry=0', '+noall', '+header', '+answer',
			($o{tcp} ? '+tcp' : ()), $type, $name ],
		'<', \undef, '>', \$out, '2>', \$err);
	my ($rcode) = $out =~ /status: (\w+)/;
	return {
		rcode  => $rcode // 'TIMEOUT',
		answer => [ grep { !/^;/ && /\S/ } split /\n/, $out ],
	};
}

# ---------------------------------------------------------------- faults

sub fault_server
{
	my ($self, $kind, %o) = @_;
	return _check_addr($o{addr} // $self->_next_addr) if $kind eq 'refuse';
	return ($self->delay_proxies($o{delay}, [ $o{upstream} ], %o))[0]
	  if $kind eq 'delay';
	return $self->_plain_http(%o) if $kind eq 'http';
	croak "unknown fault kind '$kind'" unless $FAULT_KIND{$kind};
	my $addr = _check_addr($o{addr} // $self->_next_addr);
	my %spec = (kind => $kind, host => $addr, port => $self->port_for($addr));
	$spec{$_} = $o{$_} for grep { defined $o{$_} } qw(size rate);
	$spec{close} = $o{close} ? JSON::PP::true : JSON::PP::false if exists $o{close};
	$spec{upstream} = $self->_hostport(_check_addr($o{upstream})) if $o{upstream};
	$self->_faultd('faultd-' . ++$self->{faultd}, \%spec);
	return $addr;
}

# Plain HTTP where TLS is expected comes from a real server: nginx.
sub _plain_http
{
	my ($self, %o) = @_;
	my $addr = $self->tls_host($o{name}, plain_http => 1, addr => $o{addr});
	$self->reload if $self->_running('nginx');
	return $addr;
}

# One process relaying to many upstreams, each behind its own new address,
# after waiting MS milliseconds per connection.
sub delay_proxies
{
	my ($self, $ms, $upstreams, %o) = @_;
	croak 'delay needs milliseconds' unless defined $ms && $ms =~ /^\d+$/;
	my @addrs;
	my @specs = map {
		push @addrs, _check_addr($o{addr} // $self->_next_addr);
		{
			kind     => 'delay',
			host     => $addrs[-1],
			port     => $self->port_for($addrs[-1]),
			ms       => $ms + 0,
			upstream => $self->_hostport(_check_addr($_)),
		}
	} @$upstreams;
	$self->_faultd('faultd-' . ++$self->{faultd}, @specs);
	return @addrs;
}

sub silent_dns
{
	my $self = shift;
	my $addr = $self->_silent_dns_addr;
	$self->_faultd('silent-dns',
		{ kind => 'silent_dns', host => $addr, port => $self->{dns_port} + 0 })
	  unless $self->_running('silent-dns');
	return "$addr:$self->{dns_port}";
}

sub _faultd
{
	my ($self, $name, @specs) = @_;
	my $base = "$self->{dir}/faultd/$name";
	_write_file("$base.json", JSON::PP->new->canonical->encode({ servers => \@specs }));
	$self->_spawn($name, $PYTHON, "$ENV_DIR/faultd.py", "$base.json", "$base.ready");
	$self->_wait_for("$name listening", sub { -e "$base.ready" }, $name);
	return;
}

# ---------------------------------------------------------------- processes

sub start
{
	my $self = shift;
	unless ($self->_running('knot'))
	{
		_write_file("$self->{dir}/knot/knot.conf", $self->_knot_conf);
		$self->_spawn('knot', _which('knotd'), '-c', "$self->{dir}/knot/knot.conf");
		$self->_wait_for('knotd control socket', sub { -S $self->_knot_socket }, 'knot');
		$self->_wait_zone($_) for sort keys %{ $self->{zones} };
	}
	unless ($self->_running('nginx'))
	{
		$self->_write_nginx_conf;
		my $d = "$self->{dir}/nginx";
		$self->_spawn('nginx', _which('nginx'), '-p', $d, '-c', "$d/nginx.conf",
			'-e', "$d/error.log");
		$self->_wait_nginx;
	}
	return $self;
}

sub stop
{
	my $self = shift;
	(ref $self)->stop_dir($self->{dir});
	return;
}

# Kills every process group with a pid file in DIR/run (but the caller's).
# Also what `agenv down` uses.
sub stop_dir
{
	my ($class, $dir) = @_;
	my @files = glob "$dir/run/*.pid";
	$class->kill_groups(map { _read_pid($_) // () } @files);
	unlink @files;
	return;
}

sub pids_in_dir
{
	my ($class, $dir) = @_;
	return grep { defined } map { _read_pid($_) } glob "$dir/run/*.pid";
}

# TERM to each process group (each server runs in a session of its own),
# KILL to those still alive 5 s later.
sub kill_groups
{
	my ($class, @pids) = @_;
	@pids = grep { $_ != $$ } @pids;
	kill 'TERM', map { -$_ } @pids;
	my $deadline = time + 5;
	while (my @left = grep { _group_alive($_) } @pids)
	{
		if (time > $deadline)
		{
			kill 'KILL', map { -$_ } @left;
			$deadline = time + 5;
		}
		sleep 0.02;
	}
	return;
}

# Live processes of this env: members of a session it started, or any
# process naming its directory (nginx workers rename themselves).
sub processes
{
	my $self = shift;
	my %session = map { $_ => 1 } @{ $self->{spawned} };
	return map { $_->{pid} }
	  grep { $session{ $_->{sid} } || index($_->{cmdline}, $self->{dir}) >= 0 }
	  grep { $_->{pid} != $$ } _live_processes();
}

# Every process but zombies: { pid, ppid, pgrp, sid, cmdline }.
sub _live_processes
{
	my @procs;
	for my $proc (glob '/proc/[0-9]*')
	{
		my $stat = _slurp_quiet("$proc/stat") // next;
		# pid (comm) state ppid pgrp session ...; comm may hold spaces
		my ($pid, $state, $ppid, $pgrp, $sid) =
		  $stat =~ /^(\d+) .*\)\s+(\S)\s+(\d+)\s+(\d+)\s+(\d+)/s or next;
		next if $state eq 'Z';
		push @procs, { pid => $pid, ppid => $ppid, pgrp => $pgrp, sid => $sid,
			cmdline => _slurp_quiet("$proc/cmdline") // '' };
	}
	return @procs;
}

sub _spawn
{
	my ($self, $name, @cmd) = @_;
	$self->_watchdog unless $self->{detached} || $name eq 'watchdog';
	my $log = "$self->{dir}/log/$name.log";
	$_->flush for \*STDOUT, \*STDERR;    # or the child would flush them again
	my $pid = fork // croak "fork: $!";
	if ($pid == 0)
	{
		POSIX::setsid();
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $log;
		open STDERR, '>&', \*STDOUT;
		# A thousand listeners need more files than the usual soft limit.
		exec('/bin/sh', '-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"',
			'sh', @cmd)
		  or POSIX::_exit(127);
	}
	_write_file("$self->{dir}/run/$name.pid", "$pid\n");
	push @{ $self->{spawned} }, $pid;
	return $pid;
}

# Stops the servers if this process dies without doing so; see watchdog.pl.
sub _watchdog
{
	my $self = shift;
	$self->_spawn('watchdog', $^X, "$ENV_DIR/watchdog.pl", $$, $self->{dir},
		$self->{temporary} ? '--remove' : ())
	  unless $self->_running('watchdog');
	return;
}

# The pid of a running process NAME, or undef.
sub _running
{
	my ($self, $name) = @_;
	my $pid = _read_pid("$self->{dir}/run/$name.pid") or return;
	return _group_alive($pid) ? $pid : undef;
}

# Zombies do not count: orphans wait for init to reap them, which may be slow.
sub _group_alive
{
	my ($pid) = @_;
	waitpid($pid, WNOHANG);    # reap it if it is our child
	return 0 unless kill(0, -$pid) || kill(0, $pid);
	return scalar grep { $_->{pgrp} == $pid || $_->{pid} == $pid } _live_processes();
}

sub _read_pid
{
	my ($file) = @_;
	my $text = _slurp_quiet($file) // return;
	return $text =~ /^(\d+)/ ? $1 : undef;
}

# Polls COND until true; croaks after 30 s or when process NAME has died,
# with the end of its log.
sub _wait_for
{
	my ($self, $what, $cond, $name) = @_;
	my $deadline = time + 30;
	until ($cond->())
	{
		my $dead = !$self->_running($name);
		if ($dead || time > $deadline)
		{
			my $log = _slurp_quiet("$self->{dir}/log/$name.log") // '';
			my $nginx = $name eq 'nginx' ? _slurp_quiet("$self->{dir}/nginx/error.log") // '' : '';
			croak(($dead ? "$name died" : 'timed out') . " waiting for $what\n"
				  . substr($log . $nginx, -2000));
		}
		sleep 0.02;
	}
	return;
}

# ---------------------------------------------------------------- helpers

sub _which
{
	my ($prog) = @_;
	for my $dir (split(/:/, $ENV{PATH} // ''), '/usr/sbin', '/sbin')
	{
		return "$dir/$prog" if -x "$dir/$prog";
	}
	croak "$prog not found";
}

sub _run
{
	my (@cmd) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(60))
	  or croak "command failed: @cmd\n$err$out";
	return $out;
}

sub _write_file
{
	my ($file, $text) = @_;
	open my $fh, '>', "$file.tmp" or croak "$file.tmp: $!";
	print $fh $text;
	close $fh or croak "$file.tmp: $!";
	rename "$file.tmp", $file or croak "$file: $!";
	return;
}

sub _slurp
{
	my (@files) = @_;
	return join '', map { _slurp_quiet($_) // croak "cannot read $_: $!" } @files;
}

sub _slurp_quiet
{
	my ($file) = @_;
	open my $fh, '<', $file or return;
	local $/;
	return scalar <$fh>;
}

# ---------------------------------------------------------------- hardening (issue 6)

# The scripted DNS server of test/env/dnsfault.py on $net.0.55 (dns_port),
# for the DNS faults knotd cannot produce; its answers depend on the name
# asked (www.CASE.test, see that file).  Returns 'addr:port' for
# appguard.dns_servers.  target: the address names resolve to.
sub dns_fault_server
{
	my ($self, %o) = @_;
	my $addr = "$self->{net}.0.55";
	my $name = 'dnsfault';
	unless ($self->_running($name))
	{
		my $base = "$self->{dir}/faultd/$name";
		_write_file("$base.json", JSON::PP->new->canonical->encode({
			host    => $addr,
			port    => $self->{dns_port} + 0,
			target  => _check_addr($o{target} // '127.0.0.1'),
			late_ms => ($o{late_ms} // 3000) + 0 }));
		$self->_spawn($name, $PYTHON, "$ENV_DIR/dnsfault.py", "$base.json", "$base.ready");
		$self->_wait_for("$name listening", sub { -e "$base.ready" }, $name);
	}
	return "$addr:$self->{dns_port}";
}

# The private key of a test CA, to sign certificates a test makes itself.
sub ca_key
{
	my ($self, $id) = @_;
	my $ca = $self->{cas}{$id} or croak "unknown CA '$id'";
	return $ca->{key};
}

# Use a certificate made outside cert() (odd serials, raw extensions,
# patched bytes) as NAME for tls_host.  cert: a PEM file, which may hold
# more certificates after the leaf (all are sent); key: its key; issuer:
# the CA whose chain is sent after it (default intermediate).
sub add_cert
{
	my ($self, $name, %o) = @_;
	croak "bad cert name '$name'" unless $name =~ /^[\w.-]+$/;
	my $issuer = $o{issuer} // 'intermediate';
	croak "unknown issuer '$issuer'" unless $self->{cas}{$issuer};
	$self->{certs}{$name} = {
		name => $name, key => $o{key}, key_type => $o{key_type} // 'ec256',
		cert => $o{cert}, chain => $o{cert}, issuer => $issuer, ocsp => undef };
	return { %{ $self->{certs}{$name} } };
}

# An `openssl s_server` on a new address (tls_port), for behaviour nginx
# has no setting for.  ARGS are s_server options after -accept; returns
# the address.  Stopped with the env.
sub openssl_server
{
	my ($self, $name, @args) = @_;
	croak "bad server name '$name'" unless $name =~ /^[\w-]+$/;
	my $addr = $self->_next_addr;
	$self->_spawn("s_server-$name", 'openssl', 's_server', '-accept', $self->_hostport($addr),
		'-quiet', @args);
	$self->_wait_for("s_server $name listening", sub {
			my $s = IO::Socket::INET->new(PeerAddr => $addr, PeerPort => $self->{tls_port}, Timeout => 1);
			close $s if $s;
			return defined $s;
		}, "s_server-$name");
	return $addr;
}

1;

__END__

=head1 NAME

AppGuard::TestEnv - loopback network of real TLS and DNS servers for appguard tests

=head1 SYNOPSIS

  use lib 'test/perl';
  use AppGuard::TestEnv;

  my $env = AppGuard::TestEnv->new;           # dir => ..., net => '127.78'
  $env->cert('ov', san => ['app.example.test'], o => 'Example Inc', c => 'US',
      policies => ['OV']);
  my $addr = $env->tls_host('app.example.test', cert => 'ov');
  $env->zone('example.test', [ "app A $addr", '@ TXT "appguard-client-id=app1"' ]);
  $env->start;
  $node->append_conf('postgresql.conf', $env->postgresql_conf);
  ...
  $env->tls_host('app.example.test', addr => $addr, cert => 'renewed');
  $env->reload;

=head1 DESCRIPTION

Addresses: hosts get C<$net.1.1>, C<$net.1.2>, ... (C<$net.0.x> is reserved:
.1 nginx control, .53 knotd, .54 silent DNS).  TLS servers listen on
C<tls_port> (8443, C<AG_TLS_PORT>), the one C<::1> host on C<tls6_port>
(9000 + N for 127.N, C<AG_TLS6_PORT>), DNS on C<dns_addr>:C<dns_port> (5353,
C<AG_DNS_PORT>).  C<AG_NET> sets C<$net> (127.77): runs with different nets
can run in parallel.  C<AG_KEEP=1> keeps the default temporary directory
(logs in DIR/log and DIR/nginx/error.log).  Never a packet leaves loopback:
no server is configured to reach anything but its clients.

=head1 METHODS

=over

=item new(%args)

C<dir> (default: a new temporary directory, removed at exit), C<net>,
C<tls_port>, C<tls6_port>, C<dns_port>, C<detached> (servers outlive this
process: no watchdog, no stop at exit; see C<save>/C<load>).  Makes the PKI:
CAs C<root> (trusted), C<intermediate> and C<intermediate2> (under root),
C<untrusted> (an intermediate under C<untrusted_root>, which nobody trusts).

=item AppGuard::TestEnv::slowdown() -> factor

10 when C<AG_UNDER_VALGRIND> is set (test/sanitize.sh), else 1: the factor
by which tests widen their upper time bounds under valgrind.

=item dir, net, tls_port, tls6_port, dns_addr, dns_port, ca_file, ca_cert($id)

C<ca_file> is the root CA PEM the probe trusts; C<ca_cert> gives any CA's.

=item cert($name, %opts) -> { name, key, key_type, cert, chain, issuer, ocsp }

Issues a leaf.  C<cn> (default: first SAN, else $name; C<undef> for none),
C<san> (default: [cn]), C<o ou c st l>, C<policies> (OIDs or DV/OV/IV/EV),
C<key> (rsa2048, rsa1024, rsa4096, ec256, ec384), C<key_of> (reuse the key
of another cert: a renewal with the same SPKI), C<not_before>/C<not_after>
(days from now, default -1/90, or YYYYMMDDHHMMSSZ), C<issuer> (intermediate,
intermediate2, root, untrusted, untrusted_root, self), C<revoked =E<gt> 1>, C<ocsp> (good,
revoked, unknown).  C<chain> is leaf + CA certs below the root; C<ocsp> is a
DER OCSP response file or undef.  Reusing a name reissues.

=item certs($name => {%opts}, ...) -> (cert hash, ...)

Like C<cert> for several, faster: their keys are made concurrently.

=item revoke($name) -> cert hash

Revokes in the CA database and remakes the OCSP response (C<reload> to
staple it).

=item tls_host($hostname, %opts) -> address

C<cert> (default: a cert named $hostname, issued if missing), C<chain>
(full, leaf_only, reversed = leaf root intermediate, with_root),
C<ocsp_staple>, C<plain_http>, C<protocols> (nginx ssl_protocols, default
"TLSv1.2 TLSv1.3"), C<addr> (forced; C<::1> uses tls6_port).  The same
hostname and addr again replaces that host; another hostname on a used addr
adds an SNI name.  Takes effect at C<start> or C<reload>.  What OpenSSL
clients report: leaf_only 21 (unable to verify the first certificate),
issuer untrusted 20 (unable to get local issuer), untrusted with_root 19,
self 18, expired 10, not yet valid 9, wrong name 62, rsa1024 66 at the
default security level.

=item hosts -> ({ name, addr, port, cert, chain, ... }, ...); addr_of($hostname)

=item port_for($addr)

=item start, reload, stop

C<start> runs knotd and nginx and waits until they serve; C<reload> applies
C<tls_host> changes and waits until nginx serves them; C<stop> kills every
process of the env (fault servers too).

=item zone($origin, \@lines) -> serial; zone_update($origin, \@lines)

Zone-file lines relative to $origin, each with an explicit owner (C<@>,
C<www>, C<x.example.test.>).  SOA is added, and C<@ NS ns.agenv.test.>
unless an apex NS is given.  If knotd runs, waits until the new serial is
served.  Names in no zone get REFUSED.

=item servfail_zone($origin)

Configures (or replaces) $origin with a zone file knotd cannot load: it
answers SERVFAIL until C<zone> is called again.

=item dns_query($name, $type, server => 'addr:port', tcp => 1, timeout => s) -> { rcode, answer }

=item dns_servers_guc, silent_dns -> 'addr:port'

=item fault_server($kind, %opts) -> address

Kinds: refuse (nothing listens), stall, garbage (C<size>, C<close>), http
(nginx, plain HTTP; C<name>), close_after_hello, reset, slow (C<rate> bytes/s,
C<upstream> address to trickle), delay (C<delay> ms, C<upstream>).  C<addr>
forces the address.

=item delay_proxies($ms, \@upstreams) -> addresses

One process; each upstream address gets a new address in front of it.

=item postgresql_conf(preload => 1) -> text

Lines for postgresql.conf: C<shared_preload_libraries = 'appguard'> (unless
C<preload =E<gt> 0>) and the appguard settings that point it at this
environment (DNS server, CA file, ports, private addresses allowed).  A test
that preloads more libraries names them all in a later line.

=item processes -> pids

Live processes of this env (servers, nginx workers, watchdog), for checks.

=item save; AppGuard::TestEnv->load($dir)

=item AppGuard::TestEnv->stop_dir($dir), pids_in_dir($dir), kill_groups(@pids)

Class methods: stop the env in $dir by its pid files; list those pids; kill
process groups (TERM, then KILL).

=back

=head2 Hardening (issue 6)

=over

=item dns_fault_server(target => addr, late_ms => ms) -> 'addr:port'

test/env/dnsfault.py on C<$net.0.55>: truncated UDP with TCP fallback,
garbage, wrong query id, late answers, CNAME loops and long chains, 1,000
records, oversized TXT, chosen by the name asked (www.CASE.test).

=item ca_key($id); add_cert($name, cert => pem, key => file, issuer => id)

Sign certificates in a test, and serve them with C<tls_host>.

=item openssl_server($name, @s_server_args) -> address

An C<openssl s_server> on a new address, stopped with the env.

=back

=cut

