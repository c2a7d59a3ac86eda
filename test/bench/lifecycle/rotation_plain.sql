-- The same INSERT into a copy of the table without appguard's triggers.
\set i random(1, 10000)
INSERT INTO bench.refresh_tokens_plain (token_id, client_id, subject)
VALUES ('new-' || nextval('bench.token_seq'), 'client-' || (1 + :i % 100), 'patient-' || :i);
