-- The C<->SQL contract: what src/keyread.c reads by name (tables, the
-- indexes it scans, key columns, columns) exists in schema appguard as the
-- C code expects.  The queries that list violations expect no rows.
SELECT count(*) AS tables_read_by_c, count(*) FILTER (WHERE NOT index_is_primary) AS by_plain_index
FROM appguard.keyread_contract();
-- every table and index exists, and the index is a btree on exactly the
-- key columns, in order, on every row (no predicate, no expression): the C
-- code scans it with btree equality and takes "no row" for an answer.  It
-- is the table's primary key if and only if the C code says so: it reads
-- the first row found as the only one.
SELECT k.table_name, k.index_name, k.index_is_primary
FROM appguard.keyread_contract() k
WHERE NOT EXISTS (
	SELECT FROM pg_index i
		 JOIN pg_class ic ON ic.oid = i.indexrelid
		 JOIN pg_am am ON am.oid = ic.relam
	WHERE i.indexrelid = to_regclass('appguard.' || quote_ident(k.index_name))
	  AND i.indrelid = to_regclass('appguard.' || quote_ident(k.table_name))
	  AND i.indisprimary = k.index_is_primary
	  AND am.amname = 'btree'
	  AND i.indpred IS NULL
	  AND i.indexprs IS NULL
	  AND i.indnkeyatts = cardinality(k.key_columns)
	  AND ARRAY(SELECT a.attname::text
				FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS x(attnum, n)
					 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x.attnum
				ORDER BY x.n) = k.key_columns);
-- every column read exists
SELECT k.table_name, c.column_name
FROM appguard.keyread_contract() k, unnest(k.columns) AS c(column_name)
WHERE NOT EXISTS (SELECT FROM pg_attribute a
				  WHERE a.attrelid = to_regclass('appguard.' || quote_ident(k.table_name))
					AND a.attname = c.column_name AND NOT a.attisdropped);
-- the types of the keys and columns, which the C code reads as Datums of
-- those types (keyread.c's equality functions, refresh.c)
SELECT k.table_name, c.column_name, format_type(a.atttypid, a.atttypmod) AS type
FROM appguard.keyread_contract() k
	 CROSS JOIN LATERAL unnest(k.key_columns || k.columns) AS c(column_name)
	 JOIN pg_attribute a ON a.attrelid = to_regclass('appguard.' || quote_ident(k.table_name))
						AND a.attname = c.column_name
ORDER BY 1, 2;
-- the snapshots trigger (src/snapshot_trigger.c) looks up a new snapshot's
-- host in appguard.client_hosts (KT_CLIENT_HOSTS) by the snapshot's
-- columns named as that table's key columns: same names, same types
SELECT c.column_name, format_type(s.atttypid, s.atttypmod) AS snapshots_type,
	   format_type(h.atttypid, h.atttypmod) AS client_hosts_type
FROM appguard.keyread_contract() k
	 CROSS JOIN LATERAL unnest(k.key_columns) WITH ORDINALITY AS c(column_name, n)
	 LEFT JOIN pg_attribute h ON h.attrelid = 'appguard.client_hosts'::regclass
							 AND h.attname = c.column_name AND NOT h.attisdropped
	 LEFT JOIN pg_attribute s ON s.attrelid = 'appguard.snapshots'::regclass
							 AND s.attname = c.column_name AND NOT s.attisdropped
WHERE k.table_name = 'client_hosts'
ORDER BY c.n;
-- appguard.grants and appguard.consents: the consent trigger writes a
-- grant and a first consent directly (src/grantwrite.c): the key columns
-- and the columns listed above.  Of the others none has a default (they
-- are NULL in a new row); created_at defaults to now() (the C code writes
-- the transaction's start); a consent's approved_at is written, as the
-- SQL statement writes clock_timestamp().  (The C code checks this too
-- and writes through SQL otherwise.)
SELECT a.attrelid::regclass AS tbl, a.attname, pg_get_expr(d.adbin, d.adrelid) AS default_value,
	   a.attgenerated, a.attidentity
FROM pg_attribute a
	 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid IN ('appguard.grants'::regclass, 'appguard.consents'::regclass)
  AND a.attnum > 0 AND NOT a.attisdropped
  AND (d.adbin IS NOT NULL OR a.attgenerated <> '' OR a.attidentity <> '')
ORDER BY a.attrelid::regclass::text, a.attnum;
