-- (included by fanout.sql) :tokens active grants of :client on baseline
-- :base, freshly inserted and vacuumed, the previous ones deleted.
DELETE FROM appguard.refresh_tokens WHERE client_id = :client;
VACUUM appguard.refresh_tokens;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject, baseline_snapshot_id)
SELECT 'fan' || :round || '-' || i, :client, 'patient-' || i, :base FROM generate_series(1, :tokens) i;
VACUUM ANALYZE appguard.refresh_tokens;
CHECKPOINT;
