#!/usr/bin/perl
# The table of test/bench/compare.sh, from the per-round lines that each
# side's test/bench/lifecycle.sh printed on stderr (LOGDIR/SIDE.ROUND.err).
#   perl compare_report.pl LOGDIR
# Environment: BEFORE_LABEL, AFTER_LABEL, ROUNDS, ELAPSED (s), PGVERSION,
# NPROC, AG_BENCH_CLIENTS.
use strict;
use warnings;

my $dir = shift or die "usage: compare_report.pl LOGDIR\n";
my $clients = $ENV{AG_BENCH_CLIENTS} || 1;
my %v;		# $v{side}{measure} = [values, one per round]
my %lines;	# $lines{side}{round} = [per-round lines]

for my $file (sort glob("$dir/*.err")) {
	my ($side, $round) = $file =~ m{/(before|after)\.(\d+)\.err$} or next;
	open my $fh, '<', $file or die "$file: $!";
	while (<$fh>) {
		chomp;
		next unless /^\s+(\S+)\s+round \d+: (.*)$/;
		my ($name, $rest) = ($1, $2);
		push @{ $lines{$side}{$round} }, $_;
		if ($rest =~ /^([\d.]+) ms with appguard, ([\d.]+) ms without, TPS ratio ([\d.]+)$/) {
			push @{ $v{$side}{"$name.with"} }, $1;
			push @{ $v{$side}{"$name.without"} }, $2;
			push @{ $v{$side}{"$name.tps_with"} }, 1000 * $clients / $1;
			push @{ $v{$side}{"$name.ratio"} }, $3;
		}
		elsif ($name eq 'fan-out'
			&& $rest =~ /^(\d+) tokens suspended \(.*\) in ([\d.]+) ms CPU \(([\d.]+) wall\); bare UPDATE of the same rows ([\d.]+) ms \(([\d.]+)\), ratio ([\d.]+); of a copy without triggers ([\d.]+) ms \(([\d.]+)\), ratio ([\d.]+)$/)
		{
			my @f = qw(tokens cpu wall bare_cpu bare_wall ratio copy_cpu copy_wall copy_ratio);
			my @x = ($1, $2, $3, $4, $5, $6, $7, $8, $9);
			push @{ $v{$side}{"fan.$f[$_]"} }, $x[$_] for 0 .. $#f;
		}
		elsif ($name eq 'calls'
			&& $rest =~ /^us per call of (\d+), as a non-superuser role: check ([-\d.]+), no-op ([-\d.]+), privilege test ([-\d.]+); as the superuser: check ([-\d.]+), no-op ([-\d.]+), privilege test ([-\d.]+)$/)
		{
			my @f = qw(n check noop priv su_check su_noop su_priv);
			my @x = ($1, $2, $3, $4, $5, $6, $7);
			push @{ $v{$side}{"calls.$f[$_]"} }, $x[$_] for 0 .. $#f;
		}
		else {
			die "compare_report.pl: cannot read this line of $file:\n$_\n";
		}
	}
}

sub median {
	my @s = sort { $a <=> $b } @_;
	return undef unless @s;
	return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

# "median (min-max)" of a side's measure, with $fmt
sub cell {
	my ($side, $m, $fmt, $unit) = @_;
	my $x = $v{$side}{$m} or return '-';
	my @s = sort { $a <=> $b } @$x;
	my $med = sprintf($fmt, median(@s)) . ($unit // '');
	return @s > 1 ? sprintf("%s (%s-%s)", $med, sprintf($fmt, $s[0]), sprintf($fmt, $s[-1])) : $med;
}

sub ratio {
	my ($m) = @_;
	my ($b, $a) = (median(@{ $v{before}{$m} || [] }), median(@{ $v{after}{$m} || [] }));
	return '-' unless defined $a && defined $b && $b != 0;
	return sprintf('%.3f', $a / $b);
}

my $w = 62;
sub row {
	my ($label, $m, $fmt, $unit) = @_;
	printf "%-${w}s %-22s %-22s %s\n", $label, cell('before', $m, $fmt, $unit), cell('after', $m, $fmt, $unit), ratio($m);
}

my $tokens = median(@{ $v{after}{'fan.tokens'} || $v{before}{'fan.tokens'} || [0] });
my $calls = median(@{ $v{after}{'calls.n'} || $v{before}{'calls.n'} || [0] });
my $min = sprintf('%.1f', ($ENV{ELAPSED} || 0) / 60);

print <<"EOF";
appguard token-endpoint benchmark, before and after, in one run
  before: $ENV{BEFORE_LABEL}
  after:  $ENV{AFTER_LABEL}
  $ENV{PGVERSION}, $ENV{NPROC} CPUs; $ENV{ROUNDS} rounds per side, interleaved (before, after; after, before; ...),
  each round one run of that side's own test/bench/lifecycle.sh (AG_BENCH_ROUNDS=1); $min minutes in all.

Absolute timings on this shared machine are noisy: the side-by-side ratios (second table),
each measured within one pgbench run or one psql session, are what count.  Figures: median of
the rounds (min-max); after/before: ratio of the medians (below 1: lower in the after).

EOF
printf "%-${w}s %-22s %-22s %s\n", 'absolute figures', 'before', 'after', 'after/before';
for my $p (
	[ 'refresh', 'refresh, check as its own statement' ],
	[ 'refresh-1', 'refresh, check in the SELECT ... FOR UPDATE of the grant' ],
	[ 'no-op', 'refresh, a no-op call in place of the check' ],
	[ 'own-table', 'refresh on appguard.refresh_tokens (check records it)' ],
	[ 'consent', 'consent: token INSERT into appguard.refresh_tokens' ])
{
	my ($n, $label) = @$p;
	row("$label, ms", "$n.with", '%.3f');
	row("  the same as TPS on $clients connection(s)", "$n.tps_with", '%.0f');
	row("  the same without appguard (its pair), ms", "$n.without", '%.3f');
}
row("fan-out: snapshot suspending $tokens tokens, backend CPU ms", 'fan.cpu', '%.0f');
row('  the same, wall-clock ms', 'fan.wall', '%.0f');
row('  bare UPDATE of the same rows (triggers off), CPU ms', 'fan.bare_cpu', '%.0f');
row('  bare UPDATE of a copy without triggers, CPU ms', 'fan.copy_cpu', '%.0f');

print "\n";
printf "%-${w}s %-22s %-22s %s\n", 'side-by-side ratios (within one run)', 'before', 'after', 'after/before';
row('refresh TPS, check as its own statement / unprotected', 'refresh.ratio', '%.3f');
row('refresh TPS, check in the SELECT ... FOR UPDATE / unprotected', 'refresh-1.ratio', '%.3f');
row('refresh TPS, a no-op call in its place / unprotected (floor)', 'no-op.ratio', '%.3f');
row('refresh TPS, appguard.refresh_tokens / copy without appguard', 'own-table.ratio', '%.3f');
row('consent INSERT TPS, appguard.refresh_tokens / copy', 'consent.ratio', '%.3f');
row("fan-out CPU / bare UPDATE of the same rows", 'fan.ratio', '%.3f');
row("fan-out CPU / bare UPDATE of a copy without triggers", 'fan.copy_ratio', '%.3f');
print "(TPS ratios: higher is better, 1 = no cost; fan-out ratios: lower is better)\n";

if ($v{after}{'calls.check'} || $v{before}{'calls.check'}) {
	print "\n";
	printf "%-${w}s %-22s %-22s %s\n", "us per call, one statement of $calls calls", 'before', 'after', 'after/before';
	row('appguard_check_refresh(tbl, row_key), auth-server role', 'calls.check', '%.3f');
	row('  a call that does nothing, same signature', 'calls.noop', '%.3f');
	row('  privilege test alone (has_table_privilege, row_security_active)', 'calls.priv', '%.3f');
	row('appguard_check_refresh(tbl, row_key), superuser', 'calls.su_check', '%.3f');
	row('  privilege test alone, superuser', 'calls.su_priv', '%.3f');
	print "(a side whose lifecycle.sh has no calls measure shows -)\n";
}

print "\nEach run's own lines (lifecycle.sh, stderr):\n";
for my $r (sort { $a <=> $b } keys %{ { map { %{ $lines{$_} } } keys %lines } }) {
	for my $side (qw(before after)) {
		next unless $lines{$side}{$r};
		print "$side, round $r:\n";
		print "$_\n" for @{ $lines{$side}{$r} };
	}
}
