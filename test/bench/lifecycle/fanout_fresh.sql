-- (included by fanout.sql) :tokens active grants of :client on baseline
-- :base, freshly inserted and vacuumed, the previous ones deleted.
-- One grant model: a token is a row of appguard.refresh_tokens and a row
-- of appguard.grants (its state: client, baseline).  The previous rows
-- are deleted with triggers off and their grants by hand (the AFTER
-- DELETE row trigger would take its time over 100,000 rows); the new
-- ones are inserted through the consent trigger (appguard.grant_insert),
-- which gives each the client's latest successful snapshot, :base, as
-- baseline: it is the latest while tokens are inserted for the fan-out
-- (fanout.sql checks that all :tokens are suspended).  Their patients'
-- consents go too (0.2.0): new tokens of a consent whose baseline is
-- suspended would join the suspension at once, leaving nothing active for
-- the bare UPDATE to time.
SET session_replication_role = replica;
DELETE FROM appguard.refresh_tokens WHERE client_id = :client;
DELETE FROM appguard.grants WHERE token_table = 'appguard.refresh_tokens'::regclass AND client_id = :client;
DELETE FROM appguard.consents WHERE client_id = :client;
SET session_replication_role = origin;
VACUUM appguard.refresh_tokens, appguard.grants;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
SELECT 'fan' || :round || '-' || i, :client, 'patient-' || i FROM generate_series(1, :tokens) i;
VACUUM ANALYZE appguard.refresh_tokens, appguard.grants;
CHECKPOINT;
