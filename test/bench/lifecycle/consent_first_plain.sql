-- The same INSERT into a copy of the table without appguard's triggers.
\set c random(1, 100)
INSERT INTO bench.refresh_tokens_plain (token_id, client_id, subject)
VALUES ('new-' || nextval('bench.token_seq'), 'client-' || :c, 'first-' || nextval('bench.token_seq'));
