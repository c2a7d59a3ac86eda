#!/usr/bin/perl
# Usage: watchdog.pl OWNER_PID DIR [--remove]
#
# Started by AppGuard::TestEnv in a session of its own.  When the process
# that owns the env dies without stopping it (a SIGKILL, a prove timeout),
# this stops the env's servers, so none is left behind, and with --remove
# deletes DIR, the env's temporary directory.  It remembers every pid file
# it has seen: the owner may have removed DIR already.
use strict;
use warnings;
use File::Path qw(remove_tree);
use FindBin;
use lib "$FindBin::Bin/../perl";
use AppGuard::TestEnv;
use Time::HiRes qw(sleep);

my ($owner, $dir, $remove) = @ARGV;
my %seen;
while (getppid() == $owner)
{
	$seen{$_} = 1 for AppGuard::TestEnv->pids_in_dir($dir);
	sleep 0.2;
}
$seen{$_} = 1 for AppGuard::TestEnv->pids_in_dir($dir);
AppGuard::TestEnv->kill_groups(keys %seen);
remove_tree($dir) if $remove;
