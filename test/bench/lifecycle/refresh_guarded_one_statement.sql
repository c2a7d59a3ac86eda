-- The same refresh on the protected table, the check asked in the
-- statement that reads and locks the grant (one round trip less).
\set id random(1, 10000)
BEGIN;
SELECT status, appguard_check_refresh('bench.tokens_guarded', id::text)
FROM bench.tokens_guarded WHERE id = :id FOR UPDATE;
UPDATE bench.tokens_guarded SET last_used = now() WHERE id = :id;
END;
