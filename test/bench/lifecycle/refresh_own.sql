-- A refresh on appguard.refresh_tokens: appguard_check_refresh(token_id)
-- also records the refresh (last_refreshed_at).
\set id random(1, 10000)
SELECT appguard_check_refresh('rt-' || :id);
