-- Consent: a new token of a client whose snapshot is recent; the BEFORE
-- INSERT trigger gives it that snapshot as baseline.
\set c random(1, 100)
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
VALUES ('new-' || nextval('bench.token_seq'), 'client-' || :c, 'patient');
