#!/usr/bin/perl
# Normalise a dump for test/upgrade.sh, so that two databases holding the
# same objects and rows give the same text however they got there.
#   normalize.pl schema < pg_dump --schema-only --binary-upgrade output
#       (binary-upgrade mode, because plain pg_dump writes an extension as
#       one CREATE EXTENSION line and none of its objects).  Kept: every
#       statement, grouped by pg_dump's "-- Name: ..." entries, entries in
#       name order.  Dropped: comments, blank lines, SET lines, \restrict,
#       the binary-upgrade calls and updates of pg_class that carry OIDs or
#       transaction ids, type lengths of dropped columns and missing values
#       of added ones (an upgraded table may have these, a fresh one has
#       not), the configuration tables' OIDs given to
#       binary_upgrade_create_empty_extension (test/upgrade/rows.sql lists
#       them by name).  Columns of CREATE TABLE in name order (ALTER TABLE
#       ... ADD COLUMN appends where a fresh install has the column in
#       place).
#   normalize.pl rows < test/upgrade/rows.sql output
#       Times inside values masked as <time>, rows sorted within each
#       section.  Prints "EMPTY: TABLE" on stderr for each table with no
#       row (upgrade.sh fails on those).
use strict;
use warnings;

my $mode = shift // die "usage: normalize.pl schema|rows\n";
my $time = qr/\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d(?::?\d\d)?)?/;

if ($mode eq 'rows')
{
	my (@sections, $cur);
	while (my $line = <STDIN>)
	{
		chomp $line;
		if ($line =~ /^== /)
		{
			$cur = { head => $line, rows => [] };
			push @sections, $cur;
			next;
		}
		$line =~ s/$time/<time>/g;
		if ($cur) { push @{ $cur->{rows} }, $line } else { print "$line\n" }
	}
	for my $s (@sections)
	{
		print "$s->{head}\n";
		print "$_\n" for sort @{ $s->{rows} };
		if ($s->{head} =~ /^== table (\S+)/ && !@{ $s->{rows} })
		{
			print STDERR "EMPTY: $1\n";
		}
	}
	exit 0;
}
die "normalize.pl: unknown mode $mode\n" unless $mode eq 'schema';

my (@entries, $cur, $in_table, @cols);
while (my $line = <STDIN>)
{
	chomp $line;
	if ($line =~ /^-- (?:Data for )?Name: /)
	{
		$cur = { head => $line, body => [] };
		push @entries, $cur;
		next;
	}
	next if !$cur;
	next if $line =~ /^--/ || $line =~ /^\s*$/ || $line =~ /^SET /;
	next if $line =~ /^\\(?:un)?restrict /;		# psql's \restrict with a random key
	next if $line =~ /pg_catalog\.set_config\('search_path'/;
	next if $line =~ /binary_upgrade_set_next_|binary_upgrade_set_missing_value/;
	# dropped columns: the placeholder, its pg_attribute fix-up and DROP COLUMN
	next if $line =~ /pg\.dropped\./;
	next if $line =~ /^UPDATE pg_catalog\.pg_(?:class|attribute)$/ .. $line =~ /;$/;
	$line =~ s/(binary_upgrade_create_empty_extension\('[^']*', '[^']*', (?:true|false), '[^']*'), .*\);$/$1, <config>);/;
	if ($line =~ /^CREATE (?:UNLOGGED )?TABLE .* \($/)
	{
		push @{ $cur->{body} }, $line;
		$in_table = 1;
		@cols = ();
		next;
	}
	if ($in_table)
	{
		if ($line =~ /^\)/)
		{
			push @{ $cur->{body} }, sort @cols;
			push @{ $cur->{body} }, $line;
			$in_table = 0;
		}
		else
		{
			(my $c = $line) =~ s/,$//;
			push @cols, $c;
		}
		next;
	}
	push @{ $cur->{body} }, $line;
}
for my $e (sort { $a->{head} cmp $b->{head} || join("\n", @{ $a->{body} }) cmp join("\n", @{ $b->{body} }) } @entries)
{
	print "$e->{head}\n";
	print "$_\n" for @{ $e->{body} };
}
