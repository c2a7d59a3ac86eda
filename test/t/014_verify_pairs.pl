# The CA signatures a backend verified before (src/chainverify.c): a
# backend that verified a chain does not check the intermediate's
# signature by the root again for the next host with the same
# intermediate, and only then.  A changed intermediate (one bit of its
# signature), a changed leaf, and an intermediate with the same key and
# name but expired, each served after the good chain was verified in the
# same session (and before it, in another), fail as OpenSSL fails them:
# the same verify_code and verify_depth as `openssl verify` gives.  And
# the snapshot store's row, stored directly or by its INSERT statement.
use strict;
use warnings;

use MIME::Base64 qw(decode_base64 encode_base64);
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AppGuard::TestEnv;
use AppGuard::TestNode qw(start_node);

my $env  = AppGuard::TestEnv->new;
my $port = $env->tls_port;
my $dir  = PostgreSQL::Test::Utils::tempdir();

sub slurp { return PostgreSQL::Test::Utils::slurp_file($_[0]) }

sub spew
{
	my ($file, $text) = @_;
	open my $fh, '>', $file or die "$file: $!";
	print $fh $text;
	close $fh;
	return $file;
}

# One bit of a PEM certificate's last byte (its signature) flipped
sub tampered
{
	my ($pem) = @_;
	my ($b64) = $pem =~ /-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----/s
	  or die 'no certificate';
	my $der = decode_base64($b64);
	substr($der, -1, 1) = chr(ord(substr($der, -1, 1)) ^ 1);
	return "-----BEGIN CERTIFICATE-----\n" . encode_base64($der) . "-----END CERTIFICATE-----\n";
}

my %cert;
$cert{'good.example.test'} = $env->cert('good.example.test');
$cert{$_} = $env->cert($_, key_of => 'good.example.test')
  for qw(good2.example.test badinter.example.test badleaf.example.test oldinter.example.test);
my $inter = slurp($env->ca_cert('intermediate'));

# the intermediate again: the same key and name, signed by the root, expired
my $pki = $env->dir . '/pki';
my $old_inter = "$dir/old_intermediate.crt";
$env->_sign('root', "$pki/intermediate/ca.csr", $old_inter, "$pki/ca_ext.cnf",
	'intermediate', -3650, -1);
my %served = (
	'badinter.example.test' => [ slurp($cert{'badinter.example.test'}{cert}), tampered($inter) ],
	'badleaf.example.test'  => [ tampered(slurp($cert{'badleaf.example.test'}{cert})), $inter ],
	'oldinter.example.test' => [ slurp($cert{'oldinter.example.test'}{cert}), slurp($old_inter) ],
);
my %addr;
$addr{$_} = $env->tls_host($_, cert => $_) for qw(good.example.test good2.example.test);
for my $name (sort keys %served)
{
	my $file = spew("$dir/$name.pem", join '', @{ $served{$name} });
	$env->add_cert("served-$name", cert => $file, key => $cert{$name}{key}, key_type => 'rsa2048');
	$addr{$name} = $env->tls_host($name, cert => "served-$name", chain => 'leaf_only');
}
$env->zone('example.test', [ map { "$_. A $addr{$_}" } sort keys %addr ]);
$env->start;

my $node = start_node('verify_pairs', $env);

# What `openssl verify` says of a served chain: [code, depth], or [0, 0]
sub openssl_verdict
{
	my ($name) = @_;
	my ($leaf, @rest) = @{ $served{$name} };
	my $untrusted = spew("$dir/$name.untrusted.pem", join '', @rest);
	my $leaf_file = spew("$dir/$name.leaf.pem", $leaf);
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', 'verify', '-CAfile', $env->ca_file, '-untrusted', $untrusted,
			'-purpose', 'sslserver', '-auth_level', '2', '-verify_hostname', $name, $leaf_file ],
		'<', \undef, '>', \$out, '2>', \$err);
	return [ $1, $2 ] if "$out$err" =~ /error (\d+) at (\d+) depth lookup/;
	return [ 0, 0 ];
}

# In one session: each host's [verified, verify_code, verify_depth], and
# the engine's DEBUG1 count of skipped checks after the last
sub session
{
	my (@hosts) = @_;
	my $sql = "SET client_min_messages = debug1;\n"
	  . join '', map {
		"SELECT concat_ws(' ', '$_', f->'tls'->>'verified', f->'tls'->>'verify_code', f->'tls'->>'verify_depth') "
		  . "FROM appguard_snapshot('$_', $port) f;\n"
	  } @hosts;
	my ($out, $err) = ('', '');
	$node->psql('postgres', $sql, stdout => \$out, stderr => \$err, on_error_die => 1);
	my @rows = map { [ (split / /)[ 1 .. 3 ] ] } grep { /\S/ } split /\n/, $out;
	my @skipped = $err =~ /CA signatures verified before \(this backend\): \d+ pairs kept, (\d+) checks skipped/g;
	return (\@rows, \@skipped);
}

# the good chain twice: the second time the intermediate's check is skipped
my ($rows, $skipped) = session('good.example.test', 'good2.example.test', 'good.example.test');
is_deeply($rows, [ [ 'true', 0, 0 ], [ 'true', 0, 0 ], [ 'true', 0, 0 ] ], 'good chains verified');
is_deeply($skipped, [ 0, 1, 2 ], 'the intermediate\'s signature checked once, then skipped');

# each bad chain after a good one, then before one (a new session), then
# twice in a row: OpenSSL's verdict every time
for my $name (qw(badinter.example.test badleaf.example.test oldinter.example.test))
{
	my $want = openssl_verdict($name);
	isnt($want->[0], 0, "$name: openssl verify fails it ($want->[0] at depth $want->[1])");
	($rows, $skipped) = session('good.example.test', $name, $name, 'good.example.test');
	is_deeply($rows, [ [ 'true', 0, 0 ], [ 'false', @$want ], [ 'false', @$want ], [ 'true', 0, 0 ] ],
		"$name after the good chain: verify_code $want->[0] at depth $want->[1]");
	($rows) = session($name, 'good.example.test');
	is_deeply($rows, [ [ 'false', @$want ], [ 'true', 0, 0 ] ], "$name before the good chain");
}
is(openssl_verdict('badinter.example.test')->[0], 7, 'changed intermediate: a signature failure');
is_deeply(openssl_verdict('badleaf.example.test'), [ 7, 0 ], 'changed leaf: a signature failure at the leaf');
is_deeply(openssl_verdict('oldinter.example.test'), [ 10, 1 ], 'expired intermediate: expired at depth 1');

# The snapshot store (src/store.c): the row stored is the row returned, by
# the direct insert, by the INSERT statement it falls back to when the table
# has a column more, and directly again once that column is dropped
sub stored_as_returned
{
	my ($what) = @_;
	my $ok = $node->safe_psql('postgres', qq{
		CREATE TEMP TABLE r AS SELECT appguard_snapshot('good.example.test', $port) AS f;
		SELECT s.facts = (r.f - 'id') AND s.host = 'good.example.test' AND s.status = 'ok'
		       AND cardinality(s.chain) = 2 AND (r.f->'tls'->>'verified')::boolean
		FROM r JOIN appguard.snapshots s ON s.id = (r.f->>'id')::bigint});
	is($ok, 't', "$what: the stored row is the one returned");
}
stored_as_returned('direct insert');
$node->safe_psql('postgres', 'ALTER TABLE appguard.snapshots ADD COLUMN extra integer');
stored_as_returned('a column more: through the INSERT statement');
$node->safe_psql('postgres', 'ALTER TABLE appguard.snapshots DROP COLUMN extra');
stored_as_returned('a dropped column: direct insert again');

$node->stop;
$env->stop;
done_testing;
