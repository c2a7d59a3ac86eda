# Many hosts in one event loop (src/engine.c, src/sweep.c), against real
# servers:
#  - every host kind of the snapshot tests (010, 011, 012) measured
#    together, by appguard_snapshot_many with three copies of each host in
#    flight at once and by a sweep of registered clients, gives the same
#    facts as the host measured alone (minus taken_at, elapsed_ms and id);
#  - a sweep of good, stalling, refusing, NXDOMAIN and SERVFAIL hosts: each
#    gets a snapshot with the right status, none past its deadline, and the
#    sweep's progress can be read from another session while it runs;
#  - the lifecycle through the engine: the end of a sweep is logged with
#    its counts, a drift it finds suspends the grant when it ends, and the
#    mass-drift breaker holds a sweep in which most hosts drift.
use strict;
use warnings;

use JSON::PP ();
use List::Util ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AppGuard::TestEnv;

my $t0      = time;
my $env     = AppGuard::TestEnv->new;
my $net     = $env->net;
my $port    = $env->tls_port;
my $port6   = $env->tls6_port;
my $json    = JSON::PP->new->canonical;
# under valgrind (test/sanitize.sh) the backend is 20-50 times slower: a
# probe needs a longer deadline to finish, and is noticed later
my $SLOW    = AppGuard::TestEnv::slowdown();
my $TIMEOUT = 1500 * $SLOW;    # appguard.timeout_ms of this cluster
my $MARGIN  = 300 * $SLOW;     # how late a deadline may be noticed, at most

# ---------------------------------------------------------------- scenario hosts
# The certificate cases of 010, the DNS cases of 011 and the faults of 012.
# One RSA key serves most leaves (key_of); the weak and EC cases have
# cheap keys of their own.
my %ov = (o => 'Example Health, Inc.', ou => 'Patient Apps', c => 'US', st => 'Wisconsin',
	l => 'Verona');
my @same_key = map { $_ => { key_of => 'dv.example.test' } } qw(
  sanonly.example.test expired.example.test notyet.example.test self.example.test
  untrusted.example.test leafonly.example.test reversed.example.test withroot.example.test
  revoked.example.test good.example.test unknown.example.test tls12.example.test
  tls11.example.test www.example.test alias.example.test low.example.test v6.example.test
  v6multi.example.test caa.example.test deep.sub.example.test app.example.co.uk
  ok.example.test ov-dv);
my %spec = @same_key;
$spec{'expired.example.test'}{not_before}   = -100;
$spec{'expired.example.test'}{not_after}    = -10;
$spec{'notyet.example.test'}{not_before}    = 10;
$spec{'notyet.example.test'}{not_after}     = 100;
$spec{'self.example.test'}{issuer}          = 'self';
$spec{'untrusted.example.test'}{issuer}     = 'untrusted';
$spec{'revoked.example.test'}{revoked}      = 1;
$spec{'good.example.test'}{ocsp}            = 'good';
$spec{'unknown.example.test'}{ocsp}         = 'unknown';
$spec{'sanonly.example.test'}{cn}          = undef;
$spec{'sanonly.example.test'}{san}         = ['sanonly.example.test'];
$spec{'ov-dv'}{san}                         = ['ov.example.test'];
$spec{'ov-dv'}{policies}                    = ['DV'];
$env->certs(
	'dv.example.test' => { policies => ['DV'] },
	'ov.example.test' => { key_of => 'dv.example.test', policies => ['OV'], %ov },
	'ev.example.test' => {
		key_of => 'dv.example.test', policies => ['EV'],
		o => 'Example Health LLC', c => 'US', st => 'Wisconsin', l => 'Madison'
	},
	'iv.example.test' => { key_of => 'dv.example.test', policies => [ 'IV', '1.3.6.1.4.1.99999.1' ] },
	'wild' => { key_of => 'dv.example.test', cn => '*.wild.example.test', san => ['*.wild.example.test'] },
	'wrong' => { key_of => 'dv.example.test', san => ['other.example.test'] },
	(map { $_ => $spec{$_} } sort keys %spec),
	'weak.example.test'   => { key => 'rsa1024' },
	'ecdsa.example.test'  => { key => 'ec256' },
	'ecself.example.test' => { key_of => 'ecdsa.example.test', issuer => 'self' },
	'mix' => { key_of => 'dv.example.test', cn => '*.mix.test', san => ['*.mix.test'] },);

my %addr;
sub host
{
	my ($name, %o) = @_;
	return $addr{$name} = $env->tls_host($name, cert => $o{cert} // $name, %o);
}
host($_) for qw(dv.example.test ov.example.test ev.example.test iv.example.test
  expired.example.test notyet.example.test self.example.test weak.example.test
  ecdsa.example.test ecself.example.test untrusted.example.test www.example.test
  caa.example.test deep.sub.example.test app.example.co.uk ok.example.test);
host('sanonly.example.test');
host('app.wild.example.test', cert => 'wild');
host('wrong.example.test', cert => 'wrong');
host('untrustedroot.example.test', cert => 'untrusted.example.test', chain => 'with_root');
host('leafonly.example.test', chain => 'leaf_only');
host('reversed.example.test', chain => 'reversed');
host('withroot.example.test', chain => 'with_root');
host($_, ocsp_staple => 1) for qw(revoked.example.test good.example.test unknown.example.test);
host('tls12.example.test', protocols => 'TLSv1.2');
host('tls11.example.test', protocols => 'TLSv1.1');
# the CNAME chain ends at target.example.test, which serves alias's cert
$addr{'target.example.test'} = $env->tls_host('alias.example.test', cert => 'alias.example.test');
my @multi = map { "$net.9.$_" } 100, 10, 9;
$env->tls_host('low.example.test', cert => 'low.example.test', addr => $_) for @multi;
$env->tls_host($_, cert => $_, addr => '::1') for qw(v6.example.test v6multi.example.test);
$addr{'refused.example.test'} = $env->fault_server('refuse');
$addr{'stall.example.test'}   = $env->fault_server('stall');
$addr{'garbage.example.test'} = $env->fault_server('garbage', size => 200);
$addr{'http.example.test'}    = $env->fault_server('http', name => 'http.example.test');
$addr{'hello.example.test'}   = $env->fault_server('close_after_hello');
$addr{'reset.example.test'}   = $env->fault_server('reset');
$addr{'slow.example.test'}    = $env->fault_server('slow');
$addr{'delayed.example.test'} =
  $env->fault_server('delay', delay => 300, upstream => $addr{'ok.example.test'});
$env->tls_host('delayed.example.test', addr => $addr{'ok.example.test'}, cert => 'ok.example.test');

$env->zone(
	'example.test',
	[
		(map { "$_. A $addr{$_}" } grep { /example\.test$/ } sort keys %addr),
		'alias CNAME alias2',
		'alias2 CNAME alias3.example.test.',
		'alias3 CNAME target',
		(map { "low A $_" } @multi),
		'v6 AAAA ::1',
		'v6multi AAAA 2001:db8::1',
		'v6multi AAAA ::1',
		'caa CAA 0 issue "other-ca.test; account=42"',
		'txtonly TXT "no address here"',
		'@ CAA 0 issue "ca.test"',
		'@ CAA 128 issuewild ";"',
		'@ TXT "appguard-client-id=app1"',
		'@ TXT "v=spf1 -all"',
		'@ NS ns2.provider.test.',
		'@ NS NS1.Provider.Test.',
	]);
$env->zone('example.co.uk', [ "app A $addr{'app.example.co.uk'}", '@ TXT "unrelated"' ]);
$env->servfail_zone('broken.test');

# [host, port]: every kind once
my @scenario = (
	(map { [ $_, $port ] } sort(grep { /example\.(test|co\.uk)$/ && !/^target\./ } keys %addr),
		'alias.example.test', 'low.example.test',
		'txtonly.example.test', 'missing.example.test', 'www.broken.test', 'www.nozone.test'),
	[ 'v6.example.test',      $port6 ],
	[ 'v6multi.example.test', $port6 ],
	[ 'www.example.test',     $port + 1 ],    # not in appguard.allowed_ports: blocked
);

# ---------------------------------------------------------------- the mix
# Names of five kinds, many per server: good (five nginx addresses with a
# wildcard certificate), stalling, refusing, NXDOMAIN, SERVFAIL.
my @mix_addr = map { $env->tls_host("mix$_.mix.test", cert => 'mix') } 1 .. 5;
my $mix_stall = $env->fault_server('stall');
my $mix_refused = $env->fault_server('refuse');
my (%kind_of, @mix_records);
for my $i (1 .. 150)
{
	my $n = sprintf 'g%03d', $i;
	push @mix_records, "$n A $mix_addr[$i % 5]";
	$kind_of{"$n.mix.test"} = 'good';
}
for my $i (1 .. 50)
{
	my $n = sprintf '%03d', $i;
	push @mix_records, "s$n A $mix_stall", "r$n A $mix_refused";
	$kind_of{"s$n.mix.test"}   = 'stall';
	$kind_of{"r$n.mix.test"}   = 'refused';
	$kind_of{"n$n.mix.test"}   = 'nxdomain';
	$kind_of{"f$n.broken.test"} = 'servfail';
}
$env->zone('mix.test', \@mix_records);
$env->start;
note sprintf 'environment up in %.1f s', time - $t0;

# ---------------------------------------------------------------- cluster
my $node = PostgreSQL::Test::Cluster->new('sweep_results');
$node->init;
$node->append_conf('postgresql.conf', $env->postgresql_conf . "appguard.timeout_ms = $TIMEOUT\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION appguard');

sub sql_array
{
	my ($type, @values) = @_;
	return "ARRAY[" . join(',', map { $type eq 'text' ? "'$_'" : $_ } @values) . "]::${type}[]";
}

# The facts with what differs between two measurements of the same host removed
sub comparable
{
	my ($f) = @_;
	my %c = %$f;
	delete @c{qw(taken_at elapsed_ms id)};
	return $json->encode(\%c);
}

sub key_of { return "$_[0]{host}:$_[0]{port}" }

# ---------------------------------------------------------------- alone
my @hosts = map { $_->[0] } @scenario;
my @ports = map { $_->[1] } @scenario;
my %alone;
{
	my $out = $node->safe_psql('postgres',
		'SELECT json_agg(appguard_probe(h, p) ORDER BY i) FROM unnest('
		  . sql_array('text', @hosts) . ', ' . sql_array('int', @ports)
		  . ') WITH ORDINALITY AS t(h, p, i)');
	for my $f (@{ $json->decode($out) })
	{
		$alone{ key_of($f) } = $f;
	}
	is(scalar keys %alone, scalar @scenario, scalar(@scenario) . ' scenario hosts measured one at a time');
	my %statuses;
	$statuses{ $_->{status} }++ for values %alone;
	is_deeply(\%statuses,
		{ ok => 33, dns_failed => 4, connect_failed => 1, tls_failed => 4, timeout => 2, blocked => 1 },
		'alone: every kind of outcome is in the scenario set')
	  or diag explain \%statuses;
}

# ---------------------------------------------------------------- together
# Three copies of every host, interleaved, all in flight at once.
{
	srand(4);
	my @order = List::Util::shuffle(map { @scenario } 1 .. 3);
	my $out = $node->safe_psql('postgres',
		"SET appguard.sweep_concurrency = 1024;\n"
		  . 'SELECT json_agg(f) FROM appguard_snapshot_many('
		  . sql_array('text', map { $_->[0] } @order) . ', '
		  . sql_array('int', map { $_->[1] } @order) . ') AS f');
	my @many = @{ $json->decode($out) };
	is(scalar @many, scalar @order, scalar(@order) . ' probes of appguard_snapshot_many, all at once');
	my (%copies, @differ);
	for my $f (@many)
	{
		my $k = key_of($f);
		$copies{$k}++;
		push @differ, $k unless $alone{$k} && comparable($f) eq comparable($alone{$k});
	}
	is_deeply([ sort grep { $copies{$_} != 3 } keys %alone ], [], 'each host measured three times');
	is_deeply([ sort @differ ], [], 'appguard_snapshot_many: the facts of every copy equal the host measured alone')
	  or diag explain [ map { my $k = $_; { alone => $alone{$k}, together => [ grep { key_of($_) eq $k } @many ]->[0] } } @differ[0 .. 0] ];
	is($node->safe_psql('postgres',
		'SELECT count(*) FROM appguard.snapshots s WHERE facts ->> \'status\' = status'),
		scalar @order, 'each stored with its status');
}

# ---------------------------------------------------------------- a sweep of them
{
	my $i = 0;
	$node->safe_psql('postgres', join ";\n",
		map { $i++; "SELECT appguard_register_client('sc$i', 'Scenario $i', ARRAY['https://$_->[0]:$_->[1]/cb'])" } @scenario);
	$node->safe_psql('postgres', "CALL appguard_sweep('0', '1 minute')");
	my $row = $node->safe_psql('postgres',
		"SELECT json_build_object('id', id, 'state', state, 'planned', planned, 'measured', measured) FROM appguard.sweeps ORDER BY id DESC LIMIT 1");
	my $sweep = $json->decode($row);
	is_deeply([ @$sweep{qw(state planned measured)} ], [ 'finished', scalar @scenario, scalar @scenario ],
		'the sweep measured every scenario host');
	my $out = $node->safe_psql('postgres',
		"SELECT json_agg(s.facts) FROM appguard.sweep_hosts sh JOIN appguard.snapshots s ON s.id = sh.snapshot_id WHERE sh.sweep_id = $sweep->{id}");
	my @swept = @{ $json->decode($out) };
	my @differ = grep { !$alone{ key_of($_) } || comparable($_) ne comparable($alone{ key_of($_) }) } @swept;
	is(scalar @swept, scalar @scenario, 'a snapshot of each');
	is_deeply([ map { key_of($_) } @differ ], [], 'the sweep: the facts of every host equal the host measured alone')
	  or diag explain [ $differ[0], $alone{ key_of($differ[0]) } ];
}

# ---------------------------------------------------------------- the mix
# 350 hosts: 150 good, 50 each stalling, refusing, NXDOMAIN, SERVFAIL, due
# for a sweep (never measured).
my @mix = sort keys %kind_of;
{
	my $i = 0;
	$node->safe_psql('postgres', join ";\n",
		map { $i++; "SELECT appguard_register_client('mx$i', 'Mix $i', ARRAY['https://$_:$port/cb'])" } @mix);
}

# The sweep runs in the background; another session reads its progress.
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $bg_pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->{stdin} .= "CALL appguard_sweep('1 hour', '1 minute');\n\\echo __swept__\n";
$bg->{run}->pump_nb() while length $bg->{stdin};
my (%seen, $planned, $sweep_id);
my $deadline = time + 60 * $SLOW;
while (time < $deadline)
{
	my $row = $node->safe_psql('postgres',
		"SELECT id || ' ' || state || ' ' || planned || ' ' || measured FROM appguard.sweeps WHERE pid = $bg_pid ORDER BY id DESC LIMIT 1");
	if ($row =~ /^(\d+) (\w+) (\d+) (\d+)$/)
	{
		($sweep_id, $planned) = ($1, $3);
		last if $2 ne 'running';
		$seen{$4} = 1;
	}
	sleep 0.05;
}
$bg->{run}->pump() until $bg->{stdout} =~ /__swept__/ || $bg->{stderr} =~ /ERROR/;
is($bg->{stderr}, '', 'the mix sweep ran without error');
$bg->quit;
note 'measured counts seen while the sweep ran: ' . join ' ', sort { $a <=> $b } keys %seen;
ok((grep { $_ > 0 && $_ < $planned } keys %seen),
	'another session saw the sweep part-way (measured between 0 and planned) while it ran');

{
	my $row = $node->safe_psql('postgres',
		"SELECT state || ' ' || planned || ' ' || measured || ' ' || failed FROM appguard.sweeps WHERE id = $sweep_id");
	is($row, 'finished 350 350 200', 'mix: 350 planned, 350 measured, 200 failed');
	my $out = $node->safe_psql('postgres',
		"SELECT json_agg(json_build_object('host', s.host, 'status', s.status, 'rcode', s.facts -> 'dns' ->> 'rcode',
				'elapsed', (s.facts ->> 'elapsed_ms')::int, 'taken_at', extract(epoch FROM s.taken_at)))
		 FROM appguard.sweep_hosts sh JOIN appguard.snapshots s ON s.id = sh.snapshot_id WHERE sh.sweep_id = $sweep_id");
	my %expect = (
		good     => [ 'ok',             'NOERROR' ],
		stall    => [ 'timeout',        'NOERROR' ],
		refused  => [ 'connect_failed', 'NOERROR' ],
		nxdomain => [ 'dns_failed',     'NXDOMAIN' ],
		servfail => [ 'dns_failed',     'SERVFAIL' ],);
	my (%wrong, @late, @early, @stall_start, $max_elapsed);
	my @snaps = @{ $json->decode($out) };
	for my $s (@snaps)
	{
		my $kind = $kind_of{ $s->{host} } // 'unknown';
		push @{ $wrong{$kind} }, "$s->{host}: $s->{status} $s->{rcode}"
		  unless "$s->{status} $s->{rcode}" eq join ' ', @{ $expect{$kind} // [] };
		push @late, "$s->{host}: $s->{elapsed} ms" if $s->{elapsed} > $TIMEOUT + $MARGIN;
		push @early, "$s->{host}: $s->{elapsed} ms" if $kind eq 'stall' && $s->{elapsed} < $TIMEOUT;
		push @stall_start, $s->{taken_at} if $kind eq 'stall';
		$max_elapsed = $s->{elapsed} if !defined $max_elapsed || $s->{elapsed} > $max_elapsed;
	}
	is(scalar @snaps, 350, 'mix: a snapshot for every host');
	is_deeply(\%wrong, {}, 'mix: every host has the status and DNS rcode of its kind');
	is_deeply(\@late, [], "mix: no host waited past its deadline ($TIMEOUT ms + $MARGIN ms)");
	note "mix: the longest probe took $max_elapsed ms";
	is_deeply(\@early, [], 'mix: the stalling hosts were given their full deadline');
	my ($first, $last) = (sort { $a <=> $b } @stall_start)[ 0, -1 ];
	cmp_ok(($last - $first) * 1000, '<', $TIMEOUT, 'mix: the 50 stalling hosts were in flight together');
	ok($node->log_contains(qr/LOG:  appguard: sweep $sweep_id finished: 350 of 350 hosts measured \(200 failed, 0 drifted\), 0 skipped, 0 suspension\(s\) applied, 0 held, in [0-9.]+ s/),
		'the end of the sweep is logged with its counts');

	# patients consent to the good apps: their snapshots from the sweep are
	# recent enough to be the baselines
	$node->safe_psql('postgres',
		"INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
		 SELECT 'tok-' || c.client_id, c.client_id, 'patient' FROM appguard.clients c
		 WHERE c.host LIKE 'g%.mix.test'");
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM appguard.refresh_tokens t
		   JOIN appguard.grant_states g ON g.token_table = 'appguard.refresh_tokens'::regclass
		                         AND g.token_key = t.token_id
		   JOIN appguard.sweep_hosts sh
		   ON sh.snapshot_id = g.baseline_snapshot_id AND sh.sweep_id = $sweep_id
		 WHERE t.client_id LIKE 'mx%' AND t.status = 'active'"),
		150, 'the good hosts\' snapshots from the sweep are the baselines of new grants');
}

# ---------------------------------------------------------------- drift and the breaker
# ov.example.test now serves a DV certificate: a class downgrade, found by
# the next sweep and applied when it ends.
$node->safe_psql('postgres',
	"INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
	 SELECT 'tok-ov', client_id, 'patient' FROM appguard.clients WHERE host = 'ov.example.test'");
$env->tls_host('ov.example.test', addr => $addr{'ov.example.test'}, cert => 'ov-dv');
$env->reload;
$node->safe_psql('postgres', "CALL appguard_sweep('0', '1 minute')");
is($node->safe_psql('postgres',
		"SELECT state || ' ' || drifted || ' ' || suspended || ' ' || held FROM appguard.sweeps ORDER BY id DESC LIMIT 1"),
	'finished 1 1 0', 'one host drifted: its suspension applied at the end of the sweep');
is($node->safe_psql('postgres', "SELECT status FROM appguard.refresh_tokens WHERE token_id = 'tok-ov'"),
	'suspended', 'the drifted grant is suspended');

# Trusting another CA makes every good host drift (trust lost): the
# breaker holds the suspensions instead of applying them.
$node->safe_psql('postgres',
	"SET appguard.ca_file = '" . $env->ca_cert('untrusted_root') . "';
	 CALL appguard_sweep('0', '1 minute')");
my $held = $node->safe_psql('postgres',
	"SELECT state || ' ' || measured || ' ' || drifted || ' ' || suspended || ' ' || held || ' ' || (hold_id IS NOT NULL)
	 FROM appguard.sweeps ORDER BY id DESC LIMIT 1");
like($held, qr/^finished \d+ 150 0 150 true$/, "mass drift: 150 suspensions held, none applied ($held)");
is($node->safe_psql('postgres',
		"SELECT count(*) FROM appguard.refresh_tokens WHERE client_id LIKE 'mx%' AND status = 'active'"),
	150, 'mass drift: every grant still works');
ok($node->log_contains(qr/WARNING:  appguard: 150 suspension\(s\) found by sweep \d+ are held/),
	'mass drift: the operator is warned');

$node->stop;
$env->stop;
note sprintf 'total %.1f s', time - $t0;
done_testing();
