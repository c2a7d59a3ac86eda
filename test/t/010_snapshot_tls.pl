# appguard_probe / appguard_snapshot against real TLS servers (nginx) with
# certificates from a test PKI made at run time: every certificate case of
# issue 2, each checked fact by fact.  The expected values come from the
# files the environment made (openssl x509), not from the probe itself.
use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node sql_literal);

my $t0   = time;
my $env  = AppGuard::TestEnv->new;
my $port = $env->tls_port;
my $json = JSON::PP->new->canonical;

# ---------------------------------------------------------------- certificates
# Keys are the slow part: one RSA-2048 key (dv) is shared by most leaves
# (key_of), the weak and EC leaves have cheap keys of their own.
my $ov_subject = {
	o => 'Example Health, Inc.', ou => 'Patient Apps', c => 'US',
	st => 'Wisconsin', l => 'Verona'
};
$env->certs(
	'dv.example.test' => { policies => ['DV'] },
	'ov.example.test' => { key_of => 'dv.example.test', policies => ['OV'], %$ov_subject },
	'ev.example.test' => {
		key_of => 'dv.example.test', policies => ['EV'],
		o => 'Example Health LLC', c => 'US', st => 'Wisconsin', l => 'Madison'
	},
	'iv.example.test' => { key_of => 'dv.example.test', policies => [ 'IV', '1.3.6.1.4.1.99999.1' ] },
	'wild' => { key_of => 'dv.example.test', cn => '*.wild.example.test', san => ['*.wild.example.test'] },
	'sanonly.example.test' => { key_of => 'dv.example.test', cn => undef, san => ['sanonly.example.test'] },
	'expired.example.test' => { key_of => 'dv.example.test', not_before => -100, not_after => -10 },
	'notyet.example.test'  => { key_of => 'dv.example.test', not_before => 10, not_after => 100 },
	'wrong'                => { key_of => 'dv.example.test', san => ['other.example.test'] },
	'self.example.test'    => { key_of => 'dv.example.test', issuer => 'self' },
	'untrusted.example.test' => { key_of => 'dv.example.test', issuer => 'untrusted' },
	'leafonly.example.test'  => { key_of => 'dv.example.test' },
	'reversed.example.test'  => { key_of => 'dv.example.test' },
	'revoked.example.test'   => { key_of => 'dv.example.test', revoked => 1 },
	'good.example.test'      => { key_of => 'dv.example.test', ocsp => 'good' },
	'unknown.example.test'   => { key_of => 'dv.example.test', ocsp => 'unknown' },
	'weak.example.test'      => { key => 'rsa1024' },
	'ecdsa.example.test'     => { key => 'ec256' },
	'ecself.example.test'    => { key_of => 'ecdsa.example.test', issuer => 'self' },
	'withroot.example.test'  => { key_of => 'dv.example.test' },
	'tls12.example.test'     => { key_of => 'dv.example.test' },
	'tls11.example.test'     => { key_of => 'dv.example.test' },);

my %addr;
sub host
{
	my ($name, %o) = @_;
	$addr{$name} = $env->tls_host($name, cert => $name, %o);
	return $addr{$name};
}
host($_) for qw(dv.example.test ov.example.test ev.example.test iv.example.test
  sanonly.example.test expired.example.test notyet.example.test self.example.test
  weak.example.test ecdsa.example.test ecself.example.test);
$addr{'app.wild.example.test'} = $env->tls_host('app.wild.example.test', cert => 'wild');
$addr{'wrong.example.test'} = $env->tls_host('wrong.example.test', cert => 'wrong');
host('untrusted.example.test');
$addr{'untrustedroot.example.test'} =
  $env->tls_host('untrustedroot.example.test', cert => 'untrusted.example.test', chain => 'with_root');
host('leafonly.example.test', chain => 'leaf_only');
host('reversed.example.test', chain => 'reversed');
host('withroot.example.test', chain => 'with_root');
host('revoked.example.test', ocsp_staple => 1);
host('good.example.test', ocsp_staple => 1);
host('unknown.example.test', ocsp_staple => 1);
host('tls12.example.test', protocols => 'TLSv1.2');
host('tls11.example.test', protocols => 'TLSv1.1');

$env->zone('example.test', [ map { "$_. A $addr{$_}" } sort keys %addr ]);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- cluster
my $node = start_node('snapshot_tls', $env);

sub probe
{
	my ($host, %o) = @_;
	return AppGuard::TestNode::probe($node, $host, port => $port, %o);
}

sub snapshot_count
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM appguard.snapshots');
}

# ---------------------------------------------------------------- expected values

sub openssl
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', @args ], '<', \undef, '>', \$out, '2>', \$err)
	  or die "openssl @args: $err";
	return $out;
}

# The PEM certificates of a file, in order
sub pems
{
	my ($file) = @_;
	my $text = do { local (@ARGV, $/) = $file; <> };
	return $text =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n)/sg;
}

sub der_of
{
	my ($pem) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', 'x509', '-outform', 'DER' ], '<', \$pem, '>', \$out, '2>', \$err)
	  or die "openssl x509: $err";
	return $out;
}

# What `openssl x509 -outform DER | sha256sum` says of each certificate of a file
sub file_sha256s { return map { sha256_hex(der_of($_)) } pems($_[0]) }

# The TBSCertificate of a DER certificate: the first element of the outer SEQUENCE
sub tbs_of
{
	my ($der) = @_;
	my $pos = 0;
	my $header = sub {
		my $tag = ord substr($der, $pos, 1);
		my $len = ord substr($der, $pos + 1, 1);
		my $hlen = 2;
		if ($len & 0x80)
		{
			my $n = $len & 0x7f;
			$len = 0;
			$len = ($len << 8) | ord substr($der, $pos + 2 + $_, 1) for 0 .. $n - 1;
			$hlen += $n;
		}
		return ($hlen, $len);
	};
	my ($outer_hlen) = $header->();
	$pos = $outer_hlen;
	my ($hlen, $len) = $header->();
	return substr($der, $pos, $hlen + $len);
}

sub cert_file { return $env->dir . "/pki/certs/$_[0].crt" }

# Facts of the certificate file, as appguard should report them
sub expected_leaf
{
	my ($name) = @_;
	my $pem = (pems(cert_file($name)))[0];
	my $der = der_of($pem);
	my $pub = '';
	IPC::Run::run([ 'openssl', 'x509', '-pubkey', '-noout' ], '<', \$pem, '>', \$pub);
	my $spki = '';
	IPC::Run::run([ 'openssl', 'pkey', '-pubin', '-outform', 'DER' ], '<', \$pub, '>', \$spki);
	my $text = openssl('x509', '-in', cert_file($name), '-noout', '-serial', '-dates',
		'-dateopt', 'iso_8601');
	my ($serial) = $text =~ /^serial=(\w+)$/m;
	my ($nb) = $text =~ /^notBefore=(\S+) (\S+)$/m ? "$1T$2" : undef;
	my ($na) = $text =~ /^notAfter=(\S+) (\S+)$/m ? "$1T$2" : undef;
	return {
		sha256      => sha256_hex($der),
		tbs_sha256  => sha256_hex(tbs_of($der)),
		spki_sha256 => sha256_hex($spki),
		serial      => $serial,
		not_before  => $nb,
		not_after   => $na,
	};
}

my %ISSUING_CA_1 = (C => 'US', O => 'AppGuard Test CA', CN => 'AppGuard Test Issuing CA 1');
my $INTER1_DN = 'CN=AppGuard Test Issuing CA 1,O=AppGuard Test CA,C=US';
my $ROOT_DN   = 'CN=AppGuard Test Root CA,O=AppGuard Test CA,C=US';

# Checks common to every successful handshake
sub check_measured
{
	my ($f, $host, $what) = @_;
	is($f->{schema}, 2, "$what: schema 2");
	is($f->{host}, $host, "$what: host");
	is($f->{port}, $port, "$what: port");
	is($f->{status}, 'ok', "$what: status ok");
	is($f->{error}, undef, "$what: no error");
	is($f->{dns}{rcode}, 'NOERROR', "$what: dns NOERROR");
	is_deeply($f->{dns}{a}, [ $addr{$host} ], "$what: dns.a");
	is($f->{tls}{address}, $addr{$host}, "$what: tls.address is the host's address");
	is($f->{tls}{sni}, $host, "$what: sni is the host name");
	is($f->{tls}{version}, 'TLSv1.3', "$what: TLSv1.3");
	like($f->{tls}{cipher}, qr/^TLS_(AES|CHACHA20)_\w+$/, "$what: a TLS 1.3 cipher");
}

# Fields of the leaf that must equal what the certificate file says
sub check_leaf_file
{
	my ($f, $cert, $what) = @_;
	my $exp = expected_leaf($cert);
	is($f->{tls}{leaf}{$_}, $exp->{$_}, "$what: leaf.$_") for sort keys %$exp;
}

sub check_verify
{
	my ($f, $verified, $code, $what) = @_;
	my $tls = $f->{tls};
	is($tls->{verified}, $verified ? JSON::PP::true : JSON::PP::false,
		"$what: verified " . ($verified ? 'true' : 'false'));
	is($tls->{verify_code}, $code, "$what: verify_code $code")
	  or diag($json->encode($tls));
	if ($verified)
	{
		is($tls->{verify_error}, undef, "$what: no verify_error");
	}
	else
	{
		ok(defined $tls->{verify_error} && length $tls->{verify_error},
			"$what: verify_error '" . ($tls->{verify_error} // '') . "'");
	}
}

my %facts;
my $rows_before = snapshot_count();
for my $host (sort keys %addr)
{
	$facts{$host} = probe($host);
}
is(snapshot_count(), $rows_before, 'appguard_probe stored nothing');

# ---------------------------------------------------------------- the document
# Every documented key is present, and no other.
{
	my $f = $facts{'dv.example.test'};
	is_deeply([ sort keys %$f ],
		[qw(dns elapsed_ms error host port schema status taken_at tls tls_addresses tls_addresses_skipped)],
		'document: top-level keys');
	is_deeply([ map { [ sort keys %$_ ] } @{ $f->{tls_addresses} } ],
		[ [qw(address leaf_sha256 not_after spki_sha256 status subject_o validation verified verify_code verify_error)] ],
		'document: tls_addresses keys of a measured address');
	is_deeply([ @{ $f->{tls_addresses}[0] }{qw(address status verified leaf_sha256 spki_sha256 validation)} ],
		[ $f->{tls}{address}, 'ok', $f->{tls}{verified}, @{ $f->{tls}{leaf} }{qw(sha256 spki_sha256 validation)} ],
		'document: the one address listed says what the tls keys say');
	is_deeply([ sort keys %{ $f->{dns} } ],
		[qw(a aaaa ad caa caa_domain cname cname_cross_domain cname_target_domain ns ownership_ids queries rcode registrable_domain txt)],
		'document: dns keys');
	is_deeply([ sort keys %{ $f->{tls} } ],
		[qw(address chain chain_in_order cipher hostname_match leaf ocsp ocsp_error sni verified verify_code verify_depth verify_error version)],
		'document: tls keys');
	is_deeply([ sort keys %{ $f->{tls}{leaf} } ],
		[qw(issuer key_bits key_type not_after not_before policies san_dns serial sha256 signature_algorithm spki_sha256 subject tbs_sha256 validation)],
		'document: tls.leaf keys');
	like($f->{taken_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$/, "document: taken_at in UTC ($f->{taken_at})");
	like($f->{elapsed_ms}, qr/^\d+$/, 'document: elapsed_ms');
}

# ---------------------------------------------------------------- DV, OV, EV, IV
{
	my $f = $facts{'dv.example.test'};
	check_measured($f, 'dv.example.test', 'dv');
	check_verify($f, 1, 0, 'dv');
	is($f->{tls}{verify_depth}, 0, 'dv: verify_depth 0');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'dv: hostname_match');
	is($f->{tls}{ocsp}, undef, 'dv: nothing stapled, ocsp null');
	is($f->{tls}{chain_in_order}, JSON::PP::true, 'dv: chain in order');
	my $leaf = $f->{tls}{leaf};
	is_deeply($leaf->{subject}, { CN => 'dv.example.test' }, 'dv: subject is the CN only');
	is_deeply($leaf->{issuer}, \%ISSUING_CA_1, 'dv: issuer parts');
	is_deeply($leaf->{san_dns}, ['dv.example.test'], 'dv: san_dns');
	is_deeply($leaf->{policies}, ['2.23.140.1.2.1'], 'dv: policy OID');
	is($leaf->{validation}, 'DV', 'dv: validation DV');
	is($leaf->{key_type}, 'RSA', 'dv (RSA): key_type RSA');
	is($leaf->{key_bits}, 2048, 'dv (RSA): key_bits 2048');
	is($leaf->{signature_algorithm}, 'sha256WithRSAEncryption', 'dv (RSA): signature algorithm');
	check_leaf_file($f, 'dv.example.test', 'dv');

	# the chain as sent: leaf and intermediate, hashes of the files served
	my @chain = @{ $f->{tls}{chain} };
	is(scalar @chain, 2, 'dv: two certificates sent');
	is_deeply([ map { $_->{sha256} } @chain ],
		[ file_sha256s($env->dir . '/pki/certs/dv.example.test.chain.pem') ],
		'dv: chain sha256 = openssl x509 -outform DER | sha256sum of the served files');
	is($chain[0]{sha256}, $leaf->{sha256}, 'dv: chain[0] is the leaf');
	is_deeply($chain[0], { subject => 'CN=dv.example.test', issuer => $INTER1_DN, sha256 => $leaf->{sha256} },
		'dv: chain[0] subject and issuer (RFC 2253)');
	is_deeply([ @{ $chain[1] }{qw(subject issuer)} ], [ $INTER1_DN, $ROOT_DN ],
		'dv: chain[1] is the intermediate');
}
{
	my $f = $facts{'ov.example.test'};
	check_measured($f, 'ov.example.test', 'ov');
	check_verify($f, 1, 0, 'ov');
	is_deeply($f->{tls}{leaf}{subject},
		{ CN => 'ov.example.test', O => 'Example Health, Inc.', OU => 'Patient Apps',
		  C => 'US', ST => 'Wisconsin', L => 'Verona' },
		'ov: subject O, OU, C, ST, L, CN');
	is_deeply($f->{tls}{leaf}{policies}, ['2.23.140.1.2.2'], 'ov: policy OID');
	is($f->{tls}{leaf}{validation}, 'OV', 'ov: validation OV');
	is($f->{tls}{chain}[0]{subject},
		'CN=ov.example.test,OU=Patient Apps,O=Example Health\, Inc.,L=Verona,ST=Wisconsin,C=US',
		'ov: chain subject in RFC 2253, comma escaped');
	check_leaf_file($f, 'ov.example.test', 'ov');
}
{
	my $f = $facts{'ev.example.test'};
	check_measured($f, 'ev.example.test', 'ev');
	check_verify($f, 1, 0, 'ev');
	is_deeply($f->{tls}{leaf}{subject},
		{ CN => 'ev.example.test', O => 'Example Health LLC', C => 'US', ST => 'Wisconsin', L => 'Madison' },
		'ev: subject O, C, ST, L, CN');
	is_deeply($f->{tls}{leaf}{policies}, ['2.23.140.1.1'], 'ev: policy OID');
	is($f->{tls}{leaf}{validation}, 'EV', 'ev: validation EV');
}
{
	my $f = $facts{'iv.example.test'};
	check_verify($f, 1, 0, 'iv');
	is_deeply($f->{tls}{leaf}{policies}, [ '2.23.140.1.2.3', '1.3.6.1.4.1.99999.1' ],
		'iv: both policy OIDs, in certificate order');
	is($f->{tls}{leaf}{validation}, 'IV', 'iv: validation IV');
	is_deeply($facts{'wrong.example.test'}{tls}{leaf}{policies}, [], 'no policies: empty array');
	is($facts{'wrong.example.test'}{tls}{leaf}{validation}, undef, 'no policies: validation null');
}

# ---------------------------------------------------------------- names
{
	my $f = $facts{'app.wild.example.test'};
	check_measured($f, 'app.wild.example.test', 'wildcard');
	check_verify($f, 1, 0, 'wildcard');
	is_deeply($f->{tls}{leaf}{san_dns}, ['*.wild.example.test'], 'wildcard: san_dns *.wild.example.test');
	is($f->{tls}{leaf}{subject}{CN}, '*.wild.example.test', 'wildcard: CN');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'wildcard: app.wild.example.test matches');

	$f = $facts{'sanonly.example.test'};
	check_measured($f, 'sanonly.example.test', 'san-only');
	check_verify($f, 1, 0, 'san-only');
	is_deeply($f->{tls}{leaf}{subject}, {}, 'san-only: subject has no CN (no parts at all)');
	is_deeply($f->{tls}{leaf}{san_dns}, ['sanonly.example.test'], 'san-only: san_dns');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'san-only: hostname_match true');
	is($f->{tls}{chain}[0]{subject}, '', 'san-only: empty subject in the chain');

	$f = $facts{'wrong.example.test'};
	check_measured($f, 'wrong.example.test', 'wrong host');
	check_verify($f, 0, 62, 'wrong host');
	is($f->{tls}{hostname_match}, JSON::PP::false, 'wrong host: hostname_match false');
	is_deeply($f->{tls}{leaf}{san_dns}, ['other.example.test'], 'wrong host: san_dns');
	like($f->{tls}{verify_error}, qr/hostname mismatch/i, 'wrong host: verify_error text');
}

# ---------------------------------------------------------------- validity
{
	my $f = $facts{'expired.example.test'};
	check_measured($f, 'expired.example.test', 'expired');
	check_verify($f, 0, 10, 'expired');
	like($f->{tls}{verify_error}, qr/expired/, 'expired: verify_error text');
	is($f->{tls}{verify_depth}, 0, 'expired: at depth 0');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'expired: the name still matches');
	check_leaf_file($f, 'expired.example.test', 'expired');
	cmp_ok($f->{tls}{leaf}{not_after}, 'lt', $f->{taken_at}, 'expired: not_after before taken_at');

	$f = $facts{'notyet.example.test'};
	check_measured($f, 'notyet.example.test', 'not yet valid');
	check_verify($f, 0, 9, 'not yet valid');
	like($f->{tls}{verify_error}, qr/not yet valid/, 'not yet valid: verify_error text');
	cmp_ok($f->{tls}{leaf}{not_before}, 'gt', $f->{taken_at}, 'not yet valid: not_before after taken_at');
}

# ---------------------------------------------------------------- trust
{
	my $f = $facts{'self.example.test'};
	check_measured($f, 'self.example.test', 'self-signed');
	check_verify($f, 0, 18, 'self-signed');
	is(scalar @{ $f->{tls}{chain} }, 1, 'self-signed: one certificate sent');
	is_deeply($f->{tls}{leaf}{issuer}, $f->{tls}{leaf}{subject}, 'self-signed: issuer = subject');

	$f = $facts{'untrusted.example.test'};
	check_measured($f, 'untrusted.example.test', 'untrusted issuer');
	check_verify($f, 0, 20, 'untrusted issuer (root not sent, unknown)');
	is($f->{tls}{chain}[1]{subject}, 'CN=Untrusted Issuing CA,O=Untrusted Test CA,C=US',
		'untrusted issuer: the untrusted intermediate was sent');
	is($f->{tls}{chain_in_order}, JSON::PP::true, 'untrusted issuer: chain in order');

	$f = $facts{'untrustedroot.example.test'};
	check_measured($f, 'untrustedroot.example.test', 'untrusted root');
	check_verify($f, 0, 19, 'untrusted root (sent, self-signed in chain)');
	is(scalar @{ $f->{tls}{chain} }, 3, 'untrusted root: three certificates sent');
	is($f->{tls}{chain}[2]{subject}, 'CN=Untrusted Root CA,O=Untrusted Test CA,C=US',
		'untrusted root: the root is last');

	$f = $facts{'leafonly.example.test'};
	check_measured($f, 'leafonly.example.test', 'incomplete chain');
	# The first error OpenSSL reports when only the leaf is sent and its
	# issuer is in no store is "unable to get local issuer certificate" (20).
	# (s_client prints 21, "unable to verify the first certificate": it
	# keeps the last error of the same verification, appguard the first.)
	check_verify($f, 0, 20, 'incomplete chain (intermediate not sent)');
	is($f->{tls}{verify_depth}, 0, 'incomplete chain: at depth 0');
	is(scalar @{ $f->{tls}{chain} }, 1, 'incomplete chain: one certificate sent');
	is($f->{tls}{chain_in_order}, JSON::PP::true, 'incomplete chain: a lone leaf is in order');
	is_deeply($f->{tls}{leaf}{issuer}, \%ISSUING_CA_1, 'incomplete chain: issuer still recorded');

	$f = $facts{'reversed.example.test'};
	check_measured($f, 'reversed.example.test', 'reversed chain');
	is($f->{tls}{chain_in_order}, JSON::PP::false, 'reversed chain: chain_in_order false');
	# OpenSSL builds the path from the certificates sent, whatever their order
	check_verify($f, 1, 0, 'reversed chain: still verifies');
	is_deeply([ map { $_->{subject} } @{ $f->{tls}{chain} } ],
		[ 'CN=reversed.example.test', $ROOT_DN, $INTER1_DN ], 'reversed chain: order as sent');
	is_deeply([ map { $_->{sha256} } @{ $f->{tls}{chain} } ],
		[ file_sha256s($env->dir . '/nginx/chains/reversed.example.test.reversed.pem') ],
		'reversed chain: sha256 of each as served');

	$f = $facts{'withroot.example.test'};
	check_verify($f, 1, 0, 'root sent too');
	is($f->{tls}{chain_in_order}, JSON::PP::true, 'root sent too: in order');
	is(scalar @{ $f->{tls}{chain} }, 3, 'root sent too: three certificates');
}

# ---------------------------------------------------------------- OCSP
{
	my $f = $facts{'revoked.example.test'};
	check_measured($f, 'revoked.example.test', 'revoked');
	is($f->{tls}{ocsp}, 'revoked', 'revoked: ocsp revoked');
	is($f->{tls}{ocsp_error}, undef, 'revoked: the response was read without error');
	check_verify($f, 0, 23, 'revoked');
	like($f->{tls}{verify_error}, qr/revoked/, 'revoked: verify_error text');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'revoked: the name matches');

	$f = $facts{'good.example.test'};
	check_measured($f, 'good.example.test', 'ocsp good');
	is($f->{tls}{ocsp}, 'good', 'ocsp good: ocsp good');
	check_verify($f, 1, 0, 'ocsp good');

	$f = $facts{'unknown.example.test'};
	is($f->{tls}{ocsp}, 'unknown', 'ocsp unknown: ocsp unknown');
	check_verify($f, 1, 0, 'ocsp unknown: not a revocation');
}

# ---------------------------------------------------------------- keys
{
	my $f = $facts{'weak.example.test'};
	check_measured($f, 'weak.example.test', 'RSA-1024');
	is($f->{tls}{leaf}{key_type}, 'RSA', 'RSA-1024: key_type RSA');
	is($f->{tls}{leaf}{key_bits}, 1024, 'RSA-1024: key_bits 1024 recorded');
	check_verify($f, 0, 66, 'RSA-1024 (EE key too small at level 2)');
	is($f->{tls}{hostname_match}, JSON::PP::true, 'RSA-1024: the name matches');
	check_leaf_file($f, 'weak.example.test', 'RSA-1024');

	$f = $facts{'ecdsa.example.test'};
	check_measured($f, 'ecdsa.example.test', 'ECDSA');
	check_verify($f, 1, 0, 'ECDSA');
	is($f->{tls}{leaf}{key_type}, 'EC', 'ECDSA: key_type EC');
	is($f->{tls}{leaf}{key_bits}, 256, 'ECDSA: key_bits 256');
	# the signature is the issuer's: the test intermediate has an RSA key
	is($f->{tls}{leaf}{signature_algorithm}, 'sha256WithRSAEncryption',
		'ECDSA leaf signed by an RSA CA: sha256WithRSAEncryption');
	check_leaf_file($f, 'ecdsa.example.test', 'ECDSA');
	isnt($f->{tls}{leaf}{spki_sha256}, $facts{'dv.example.test'}{tls}{leaf}{spki_sha256},
		'ECDSA and RSA keys: different spki_sha256');

	$f = $facts{'ecself.example.test'};
	check_verify($f, 0, 18, 'self-signed ECDSA');
	is($f->{tls}{leaf}{key_type}, 'EC', 'self-signed ECDSA: key_type EC');
	is($f->{tls}{leaf}{key_bits}, 256, 'self-signed ECDSA: key_bits 256');
	is($f->{tls}{leaf}{signature_algorithm}, 'ecdsa-with-SHA256',
		'self-signed ECDSA: ecdsa-with-SHA256');
	is($f->{tls}{leaf}{spki_sha256}, $facts{'ecdsa.example.test'}{tls}{leaf}{spki_sha256},
		'same key, other certificate: same spki_sha256');
}

# ---------------------------------------------------------------- protocol
{
	my $f = $facts{'tls12.example.test'};
	is($f->{status}, 'ok', 'TLS 1.2 only: status ok');
	is($f->{tls}{version}, 'TLSv1.2', 'TLS 1.2 only: version TLSv1.2');
	like($f->{tls}{cipher}, qr/^ECDHE-/, "TLS 1.2 only: an ECDHE cipher ($f->{tls}{cipher})");
	check_verify($f, 1, 0, 'TLS 1.2 only');
	check_leaf_file($f, 'tls12.example.test', 'TLS 1.2 only');

	# recorded, not failed: the client accepts what the library has
	$f = $facts{'tls11.example.test'};
	is($f->{status}, 'ok', 'TLS 1.1 only: status ok');
	is($f->{tls}{version}, 'TLSv1.1', 'TLS 1.1 only: version TLSv1.1');
	check_verify($f, 1, 0, 'TLS 1.1 only');
}

# ---------------------------------------------------------------- snapshots
# appguard_snapshot stores the facts it returns and the DER chain as sent.
for my $host ('dv.example.test', 'reversed.example.test', 'leafonly.example.test', 'sanonly.example.test')
{
	my $before = snapshot_count();
	my $f = probe($host, store => 1);
	ok($f->{id} =~ /^\d+$/, "snapshot $host: id $f->{id}");
	is(snapshot_count(), $before + 1, "snapshot $host: one row stored");
	my ($row) = $node->safe_psql('postgres', qq{
		SELECT json_build_object('host', host, 'port', port, 'status', status,
			'taken_at', taken_at = (facts->>'taken_at')::timestamptz,
			'facts', facts, 'n', cardinality(chain),
			'sha', (SELECT json_agg(encode(sha256(c), 'hex') ORDER BY i)
			        FROM unnest(chain) WITH ORDINALITY AS u(c, i)))
		FROM appguard.snapshots WHERE id = $f->{id}});
	my $stored = $json->decode($row);
	my %returned = %$f;
	delete $returned{id};
	is_deeply($stored->{facts}, \%returned, "snapshot $host: stored facts = returned facts minus id");
	is_deeply([ @$stored{qw(host port status)} ], [ $host, $port, 'ok' ],
		"snapshot $host: host, port, status columns");
	ok($stored->{taken_at}, "snapshot $host: taken_at column = facts.taken_at");
	is($stored->{n}, scalar @{ $f->{tls}{chain} }, "snapshot $host: chain column holds $stored->{n} DER certificates, as sent");
	is($stored->{sha}[0], $f->{tls}{leaf}{sha256}, "snapshot $host: sha256(chain[1]) = tls.leaf.sha256");
	is_deeply($stored->{sha}, [ map { $_->{sha256} } @{ $f->{tls}{chain} } ],
		"snapshot $host: every chain[] DER hashes to tls.chain[].sha256");
}
{
	# the DER column, byte for byte, against the served file
	my $hex = $node->safe_psql('postgres',
		q{SELECT encode(chain[2], 'hex') FROM appguard.snapshots WHERE host = 'dv.example.test' ORDER BY id DESC LIMIT 1});
	my @pems = pems($env->dir . '/pki/certs/dv.example.test.chain.pem');
	is($hex, unpack('H*', der_of($pems[1])), 'snapshot: chain[2] is the DER of the intermediate as served');
}

# ---------------------------------------------------------------- renewal
# A renewal that keeps the key: same SPKI, new certificate.
{
	my $before = $facts{'ecdsa.example.test'}{tls}{leaf};
	$env->cert('ecdsa-renewed', key_of => 'ecdsa.example.test', san => ['ecdsa.example.test']);
	$env->tls_host('ecdsa.example.test', addr => $addr{'ecdsa.example.test'}, cert => 'ecdsa-renewed');
	$env->reload;
	my $f = probe('ecdsa.example.test', store => 1);
	my $after = $f->{tls}{leaf};
	check_verify($f, 1, 0, 'renewed');
	is($after->{spki_sha256}, $before->{spki_sha256}, 'renewal with key_of: spki_sha256 unchanged');
	isnt($after->{sha256}, $before->{sha256}, 'renewal with key_of: sha256 changed');
	isnt($after->{tbs_sha256}, $before->{tbs_sha256}, 'renewal with key_of: tbs_sha256 changed');
	isnt($after->{serial}, $before->{serial}, 'renewal with key_of: serial changed');
	check_leaf_file($f, 'ecdsa-renewed', 'renewed');
}

# ---------------------------------------------------------------- trust store kept
# A backend keeps its trust store across calls and loads it again when
# appguard.ca_file changes or the file changes on disk.
{
	my $ca = $env->dir . '/ca-kept.pem';
	PostgreSQL::Test::Utils::append_to_file($ca, PostgreSQL::Test::Utils::slurp_file($env->ca_file));
	chmod 0644, $ca;
	my $s = $node->background_psql('postgres');
	my $verified = sub {
		my $out = $s->query_safe("SELECT appguard_probe('dv.example.test', $port)->'tls'->>'verified'");
		return $out;
	};
	$s->query_safe("SET appguard.ca_file = '$ca'");
	is($verified->(), 'true', 'kept store: verified against a copy of the CA file');
	is($verified->(), 'true', 'kept store: a second probe of the session verifies too');
	# another CA's certificate in its place: the same session no longer trusts it
	open my $fh, '>', $ca or die "$ca: $!";
	print $fh PostgreSQL::Test::Utils::slurp_file(cert_file('self.example.test'));
	close $fh;
	is($verified->(), 'false', 'kept store: the CA file replaced on disk is read again');
	$s->query_safe("SET appguard.ca_file = '" . $env->ca_file . "'");
	is($verified->(), 'true', 'kept store: another appguard.ca_file is loaded');
	$s->query_safe('RESET appguard.ca_file');
	is($verified->(), 'true', 'kept store: back to the configured file');
	$s->quit;
}

# ---------------------------------------------------------------- key decoding
# With OpenSSL 3.0 the certificates' keys are decoded by the library's
# built-in RSA and EC methods during a handshake (src/keydecode.c); every
# probe above ran so.  A new backend says which way at DEBUG1.
{
	my $openssl_3_0 = `openssl version` =~ /^OpenSSL 3\.0\./;
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET client_min_messages = debug1; SELECT appguard_probe('dv.example.test', $port)->'tls'->>'verified'");
	is($out, 'true', 'key decoding: a new backend verifies the chain');
	like($err, $openssl_3_0
		? qr/certificate keys are decoded by OpenSSL's built-in RSA and EC methods \(OpenSSL 3\.0\)/
		: qr/certificate keys are decoded by OpenSSL's decoders/,
		'key decoding: ' . ($openssl_3_0 ? 'built-in methods with OpenSSL 3.0' : "the library's decoders"));
}

$node->stop;
$env->stop;
note sprintf 'total %.1f s', time - $t0;
done_testing;
