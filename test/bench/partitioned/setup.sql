-- Tables of the partitioned-table benchmark (partitioned.sh), after
-- lifecycle/setup.sql (its bench.snap, bench.time_ms and bench.cpu_ms_of):
-- the same token table plain, and partitioned by issue time into 30 daily
-- partitions with the primary key (token_id, issued_at), both protected.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE TABLE bench.tok_plain (
	token_id	text PRIMARY KEY,
	client_id	text NOT NULL,
	subject		text NOT NULL,
	status		text NOT NULL DEFAULT 'active',
	error_uri	text,
	issued_at	timestamptz NOT NULL
);
CREATE TABLE bench.tok_part (
	token_id	text NOT NULL,
	client_id	text NOT NULL,
	subject		text NOT NULL,
	status		text NOT NULL DEFAULT 'active',
	error_uri	text,
	issued_at	timestamptz NOT NULL,
	PRIMARY KEY (token_id, issued_at)
) PARTITION BY RANGE (issued_at);
DO $$
BEGIN
	FOR d IN 0 .. 29 LOOP
		EXECUTE format('CREATE TABLE bench.tok_part_%s PARTITION OF bench.tok_part FOR VALUES FROM (%L) TO (%L)',
					   d, date '2026-11-01' + d, date '2026-11-01' + d + 1);
	END LOOP;
END
$$;
SELECT appguard_protect('bench.tok_plain', 'client_id', 'status', 'error_uri') ->> 'table';
SELECT appguard_protect('bench.tok_part', 'client_id', 'status', 'error_uri') ->> 'table';
