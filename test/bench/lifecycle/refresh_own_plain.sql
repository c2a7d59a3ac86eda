-- The same on a copy of appguard.refresh_tokens without appguard: read
-- the status, record the refresh.
\set id random(1, 10000)
UPDATE bench.refresh_tokens_plain SET last_refreshed_at = now()
WHERE token_id = 'rt-' || :id AND status = 'active' RETURNING status;
