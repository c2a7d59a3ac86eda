---------------------------------------------------------------------------
-- Snapshots: one row per measurement of one host
---------------------------------------------------------------------------

CREATE TABLE appguard.snapshots (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	host		text NOT NULL,
	port		integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
	taken_at	timestamptz NOT NULL,
	status		text NOT NULL CHECK (status IN ('ok', 'dns_failed', 'connect_failed',
											  'tls_failed', 'timeout', 'blocked')),
	facts		jsonb NOT NULL,
	chain		bytea[] NOT NULL DEFAULT '{}'	-- DER of each certificate as sent
);
COMMENT ON TABLE appguard.snapshots IS 'One measurement of a host''s DNS and TLS facts';
CREATE INDEX snapshots_host_taken_at ON appguard.snapshots (host, port, taken_at DESC);
SELECT pg_catalog.pg_extension_config_dump('appguard.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('appguard.snapshots_id_seq', '');

---------------------------------------------------------------------------
-- Measuring
---------------------------------------------------------------------------

CREATE FUNCTION @extschema@.appguard_probe(host text, port integer DEFAULT 443)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'appguard_probe'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.appguard_probe(text, integer) IS
	'Measure a host''s DNS and TLS facts now; stores nothing';

CREATE FUNCTION @extschema@.appguard_snapshot(host text, port integer DEFAULT 443)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'appguard_snapshot'
LANGUAGE C VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.appguard_snapshot(text, integer) IS
	'Measure a host and store the snapshot; returns the facts with "id"';

CREATE FUNCTION @extschema@.appguard_snapshot_many(hosts text[], ports integer[] DEFAULT NULL)
RETURNS SETOF jsonb
AS 'MODULE_PATHNAME', 'appguard_snapshot_many'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.appguard_snapshot_many(text[], integer[]) IS
	'Measure many hosts concurrently and store a snapshot of each';

CREATE FUNCTION @extschema@.appguard_normalize_host(host text)
RETURNS text
AS 'MODULE_PATHNAME', 'appguard_normalize_host'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.appguard_normalize_host(text) IS
	'The host name as appguard measures it (lower-case A-labels), or an error saying why it is refused';

CREATE FUNCTION @extschema@.appguard_registrable_domain(host text)
RETURNS text
AS 'MODULE_PATHNAME', 'appguard_registrable_domain'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.appguard_registrable_domain(text) IS
	'The registrable domain (eTLD+1) of a host by the public suffix list; NULL for a public suffix itself';

CREATE FUNCTION @extschema@.appguard_address_class(addr inet)
RETURNS text
AS 'MODULE_PATHNAME', 'appguard_address_class'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.appguard_address_class(inet) IS
	'The class the address guard gives an address: public, loopback, private, ...';

CREATE FUNCTION @extschema@.appguard_address_allowed(addr inet, allow_private boolean, networks text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'appguard_address_allowed'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.appguard_address_allowed(inet, boolean, text) IS
	'Whether a probe may connect to the address, given appguard.allow_private_addresses and appguard.allowed_networks';

CREATE FUNCTION appguard.setting(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'appguard_setting'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION appguard.setting(text) IS
	'Value of an appguard.* setting (loads the library, so the setting is defined)';

CREATE FUNCTION appguard.url_encode(value text)
RETURNS text
AS 'MODULE_PATHNAME', 'appguard_url_encode'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION appguard.url_encode(text) IS
	'Percent-encode all but RFC 3986 unreserved characters';

