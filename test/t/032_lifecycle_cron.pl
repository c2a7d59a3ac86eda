# pg_cron runs the sweep: a job scheduled on a cluster that preloads
# pg_cron CALLs appguard_sweep, which measures a real host whose
# certificate changed organization since the patient's consent, and the
# patient's token is suspended.  pg_cron 1.4 schedules by the minute, so
# the job runs at the next minute boundary: the test polls for up to
# three minutes.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AppGuard::TestEnv;
use AppGuard::LifecycleTest;

my $t0  = time;
my $env = AppGuard::TestEnv->new;

my %id = (o => 'Example Health, Inc.', c => 'US', st => 'Wisconsin', l => 'Verona', policies => ['OV']);
$env->cert('app', %id, san => ['app.cron.test']);
$env->cert('app-other', %id, o => 'Someone Else LLC', san => ['app.cron.test'], key_of => 'app');
my $addr = $env->tls_host('app.cron.test', cert => 'app');
$env->zone('cron.test', [ "app A $addr", '@ TXT "appguard-client-id=cron-app"' ]);
$env->start;

my $lc = AppGuard::LifecycleTest->new('lifecycle_cron', $env, conf => <<'CONF');
shared_preload_libraries = 'pg_cron, appguard'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
CONF
$lc->sql('CREATE EXTENSION pg_cron');

$lc->register('cron-app', 'Cron App', 'app.cron.test');
my $base = $lc->snapshot(['app.cron.test'])->{'app.cron.test'};
is($base->{tls}{leaf}{subject}{O}, 'Example Health, Inc.', 'baseline: the original organization');
$lc->issue('cron-app', 'cron-t1');
is($lc->token('cron-t1')->{baseline_snapshot_id}, $base->{id}, 'token consented against the baseline');

$env->tls_host('app.cron.test', addr => $addr, cert => 'app-other');
$env->reload;

my $job = $lc->sql(q{SELECT cron.schedule('appguard-sweep', '* * * * *',
                                          $$CALL appguard_sweep('0 s', '30 s')$$)});
like($job, qr/^\d+$/, "pg_cron job $job scheduled every minute");
note sprintf 'scheduled at %.1f s; waiting for the next minute', time - $t0;

ok($lc->poll(q{SELECT status = 'suspended' FROM appguard.refresh_tokens WHERE token_id = 'cron-t1'}, 180),
	'the token is suspended by the sweep pg_cron ran');
note sprintf 'suspended at %.1f s', time - $t0;

my ($sweep) = $lc->rows('SELECT * FROM appguard.sweeps ORDER BY id LIMIT 1');
is_deeply([ @$sweep{qw(state measured drifted suspended tokens_suspended)} ], [ 'finished', 1, 1, 1, 1 ],
	'the sweep row: measured 1, drifted 1, 1 suspension applied to 1 token') or diag explain $sweep;
my ($susp) = $lc->suspensions('cron-app');
is_deeply($susp->{reasons}, ['tls_identity_changed'], 'suspension reason tls_identity_changed');
is($susp->{sweep_id}, $sweep->{id}, 'the suspension belongs to that sweep');
ok($lc->poll(qq{SELECT EXISTS (SELECT FROM cron.job_run_details
                               WHERE jobid = $job AND status = 'succeeded'
                                 AND command LIKE '%appguard_sweep%')}, 30),
	'cron.job_run_details: the job succeeded');
$lc->sql(q{SELECT cron.unschedule('appguard-sweep')});
is($lc->sql('SELECT count(*) FROM cron.job'), '0', 'job unscheduled');

note sprintf 'done in %.1f s', time - $t0;
done_testing();
