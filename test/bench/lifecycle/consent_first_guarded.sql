-- Consent: the first token of a new patient (a subject with no consent
-- yet) for a client whose snapshot is recent.  The consent trigger starts
-- the subject's consent with that snapshot as baseline (in C, one kept
-- INSERT into appguard.consents; appguard.consent_grant for the rest).
\set c random(1, 100)
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
VALUES ('new-' || nextval('bench.token_seq'), 'client-' || :c, 'first-' || nextval('bench.token_seq'));
