-- A refresh on a protected table: read and lock the grant, ask appguard,
-- record the refresh.
\set id random(1, 10000)
BEGIN;
SELECT status FROM bench.tokens_guarded WHERE id = :id FOR UPDATE;
SELECT appguard_check_refresh('bench.tokens_guarded', :id::text);
UPDATE bench.tokens_guarded SET last_used = now() WHERE id = :id;
END;
