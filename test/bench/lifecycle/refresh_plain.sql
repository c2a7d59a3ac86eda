-- The same refresh on the same table without appguard.
\set id random(1, 10000)
BEGIN;
SELECT status FROM bench.tokens_plain WHERE id = :id FOR UPDATE;
UPDATE bench.tokens_plain SET last_used = now() WHERE id = :id;
END;
