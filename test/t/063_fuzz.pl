# A short run of every libFuzzer harness (test/fuzz/run.sh): each must
# execute inputs and find no crash, sanitizer report or broken invariant.
# The long run is the same script with more seconds: test/fuzz/run.sh 3600.
# Skipped, with the reason, where clang's libFuzzer is not installed.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $seconds = $ENV{AG_FUZZ_SECONDS} // 4;

plan skip_all => 'clang with libFuzzer is not installed (apt-get install clang libclang-rt-dev)'
  unless -x '/usr/bin/clang' && glob('/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a');

my $out = `bash '$root/test/fuzz/run.sh' $seconds 2>&1`;
my $rc = $? >> 8;
note $out;
for my $h (qw(dns tls host drift))
{
	my ($execs, $crashes) = $out =~ /^fuzz $h: (\d+) executions, (\d+) crashes/m;
	ok(defined $execs && $execs > 0, "fuzz_$h ran " . ($execs // 0) . " inputs in $seconds s");
	is($crashes, 0, "fuzz_$h: no crash");
}
like($out, qr/^fuzz: 4 passed, 0 failed$/m, 'run.sh: every harness passed');
is($rc, 0, 'run.sh exit status 0');
done_testing;
