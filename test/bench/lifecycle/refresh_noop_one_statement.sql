-- The one-statement refresh with a call that does nothing in place of
-- appguard_check_refresh (bench.noop_check, same signature): the floor
-- any implementation of the check pays in this transaction.
\set id random(1, 10000)
BEGIN;
SELECT status, bench.noop_check('bench.tokens_guarded', id::text)
FROM bench.tokens_guarded WHERE id = :id FOR UPDATE;
UPDATE bench.tokens_guarded SET last_used = now() WHERE id = :id;
END;
