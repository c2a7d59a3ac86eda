-- The per-call cost of the refresh check on a protected table, and of its
-- privilege test alone (psql variable: calls).  One statement calls, for
-- :calls grants of bench.tokens_guarded in turn:
--   check   appguard_check_refresh(tbl, row_key) (the fast path: allowed)
--   noop    bench.noop_check(tbl, row_key), a call that does nothing
--   priv    has_table_privilege(tbl, 'SELECT') and row_security_active(tbl):
--           what the check's privilege test (src/hostrow.c,
--           hostrow_require_select: pg_class_aclcheck, check_enable_rls)
--           does, through SQL (an upper bound: two calls, a privilege
--           string parsed; the table given through CASE WHEN i > 0, lest
--           the planner evaluate calls of constants once, as a one-time
--           filter)
--   empty   the same statement calling nothing (the key cast only)
-- Prints the backend's CPU time of each, in ms (/proc/self/schedstat).  Run as the role to
-- measure (lifecycle.sh: bench_auth, an auth server's role that is not a
-- superuser, and the superuser).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\set loop 'SELECT count(*) FROM generate_series(1, ' :calls ') i WHERE '
SELECT bench.cpu_ms_of(:'loop' || '(1 + mod(i, 10000))::text IS NOT NULL') AS empty \gset
SELECT bench.cpu_ms_of(:'loop' || 'appguard_check_refresh(''bench.tokens_guarded'', (1 + mod(i, 10000))::text) IS NOT NULL') AS check \gset
SELECT bench.cpu_ms_of(:'loop' || 'bench.noop_check(''bench.tokens_guarded'', (1 + mod(i, 10000))::text) IS NOT NULL') AS noop \gset
SELECT bench.cpu_ms_of(:'loop' || '(1 + mod(i, 10000))::text IS NOT NULL AND has_table_privilege(CASE WHEN i > 0 THEN ''bench.tokens_guarded''::regclass END, ''SELECT'') AND NOT row_security_active(CASE WHEN i > 0 THEN ''bench.tokens_guarded''::regclass END)') AS priv \gset
SELECT :check AS check_ms, :noop AS noop_ms, :priv AS priv_ms, :empty AS empty_ms;
