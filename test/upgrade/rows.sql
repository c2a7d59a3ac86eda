-- The rows of appguard in one database, for test/upgrade.sh to compare
-- (psql -X -At -f): the extension's version and configuration tables,
-- then one section per table of the extension ("== table NAME (columns)"
-- and its rows, columns in name order, as COPY writes them) and per
-- sequence of the extension or of its tables (last_value, is_called).
-- Values that must differ between two databases given the same rows are
-- masked: columns of a date or time type and columns named pid or *_pid
-- (a backend's pid) show <name> when not null.  upgrade.sh also masks
-- times inside values (jsonb, text) and sorts each section's rows.
-- Tables and sequences are found through pg_depend, never by name.
\set ON_ERROR_STOP 1
SELECT '== extension ' || e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'appguard';
SELECT 'config ' || u.tbl::pg_catalog.regclass || ' ' || pg_catalog.quote_literal(u.cond)
FROM pg_catalog.pg_extension e, unnest(e.extconfig, e.extcondition) AS u(tbl, cond)
WHERE e.extname = 'appguard' ORDER BY 1;

WITH members AS (
	SELECT c.oid, c.relkind, c.oid::pg_catalog.regclass::text AS name
	FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'appguard')
), tables AS (
	SELECT m.oid, m.name, a.cols, a.names
	FROM members m, LATERAL (
		SELECT string_agg(CASE WHEN a.atttypid IN ('date'::regtype, 'time'::regtype, 'timetz'::regtype,
												   'timestamp'::regtype, 'timestamptz'::regtype)
									OR a.attname = 'pid' OR a.attname LIKE '%\_pid'
							   THEN format('CASE WHEN %I IS NOT NULL THEN %L END', a.attname, '<' || a.attname || '>')
							   ELSE quote_ident(a.attname) END, ', ' ORDER BY a.attname) AS cols,
			   string_agg(quote_ident(a.attname), ', ' ORDER BY a.attname) AS names
		FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = m.oid AND a.attnum > 0 AND NOT a.attisdropped) a
	WHERE m.relkind IN ('r', 'p')
), sequences AS (
	SELECT s.oid, s.oid::pg_catalog.regclass::text AS name
	FROM pg_catalog.pg_class s
	WHERE s.relkind = 'S'
	  AND (s.oid IN (SELECT m.oid FROM members m)
		   OR EXISTS (SELECT FROM pg_catalog.pg_depend d
					  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = s.oid
						AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
						AND d.refobjid IN (SELECT t.oid FROM tables t)))
)
SELECT q FROM (
	SELECT t.name AS name, 1 AS step, format('SELECT %L', '== table ' || t.name || ' (' || t.names || ')') AS q FROM tables t
	UNION ALL
	SELECT t.name, 2, format('COPY (SELECT %s FROM %s) TO STDOUT', t.cols, t.name) FROM tables t
	UNION ALL
	SELECT s.name, 1, format('SELECT %L || '' '' || last_value || '' '' || is_called FROM %s',
							 '== sequence ' || s.name, s.name) FROM sequences s
) x ORDER BY name, step \gexec
