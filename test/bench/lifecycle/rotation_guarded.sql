-- Rotation: a new token of an existing grant (the subject of one of
-- setup.sql's 10,000 tokens, for its client: a consent whose baseline is
-- the client's latest snapshot).  The consent trigger's C fast path gives
-- it the consent's baseline.  (The host's revocation of the old token is
-- an UPDATE of its own, not measured here.)
\set i random(1, 10000)
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
VALUES ('new-' || nextval('bench.token_seq'), 'client-' || (1 + :i % 100), 'patient-' || :i);
