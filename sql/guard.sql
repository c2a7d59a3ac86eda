-- The SQL surface of measuring, without any network traffic:
-- host-name validation, the address classes of the SSRF guard, the port
-- allow-list, and who may call what.
SET search_path = appguard, public;

-- Host names are normalised: lower case, no final dot, IDN to A-labels
SELECT appguard_normalize_host('App.Example.ORG.');
SELECT appguard_normalize_host('bücher.example');
SELECT appguard_normalize_host('xn--bcher-kva.example');
SELECT appguard_normalize_host('a-b.c-d.example');

-- Registrable domains by the public suffix list
SELECT h, appguard_registrable_domain(h)
FROM (VALUES ('app.example.org'), ('a.b.example.co.uk'), ('example.co.uk'),
			 ('co.uk'), ('app.example.test'), ('x.y.github.io')) AS t(h);

-- Everything else is refused with SQLSTATE 22023 and the reason
\set VERBOSITY default
SELECT appguard_normalize_host('');
SELECT appguard_normalize_host('example');
SELECT appguard_normalize_host('127.0.0.1');
SELECT appguard_normalize_host('2130706433');
SELECT appguard_normalize_host('0x7f.1');
SELECT appguard_normalize_host('0177.0.0.1');
SELECT appguard_normalize_host('::1');
SELECT appguard_normalize_host('[::1]');
SELECT appguard_normalize_host('host.123');
SELECT appguard_normalize_host('has space.example');
SELECT appguard_normalize_host(E'tab\there.example');
SELECT appguard_normalize_host('under_score.example');
SELECT appguard_normalize_host('-lead.example');
SELECT appguard_normalize_host('trail-.example');
SELECT appguard_normalize_host('double..dot.example');
SELECT appguard_normalize_host('https://app.example.org/');
SELECT appguard_normalize_host('app.example.org:443');
SELECT appguard_normalize_host(repeat('a', 64) || '.example');
SELECT appguard_normalize_host(repeat('abcdefghi.', 26) || 'example');
SELECT length(appguard_normalize_host(repeat('abcdefghi.', 24) || 'example'));
SELECT appguard_normalize_host('ex!ample.org');
\set VERBOSITY terse

-- A bad name is quoted up to 300 bytes, cut on a character boundary: the
-- message stays valid UTF-8 (convert_from would refuse it otherwise)
CREATE FUNCTION pg_temp.host_error(host text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM appguard_normalize_host(host);
	RETURN 'accepted';
EXCEPTION WHEN invalid_parameter_value THEN
	RETURN SQLERRM;
END
$$;
SELECT octet_length(m) AS bytes, length(convert_from(textsend(m), 'UTF8')) AS characters,
	   right(m, 4) AS ending
FROM (VALUES (pg_temp.host_error('a' || repeat('ü', 400))),
			 (pg_temp.host_error('ab' || repeat('€', 400))),
			 (pg_temp.host_error(repeat('ü', 400)))) AS t(m);
-- and survives the conversion to a client encoding
SET client_encoding = 'LATIN1';
SELECT appguard_normalize_host(repeat('a', 299) || 'ü.example');
RESET client_encoding;

-- The SQLSTATE is 22023 (invalid_parameter_value)
DO $$
BEGIN
	PERFORM appguard_normalize_host('127.0.0.1');
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE NOTICE 'refused with %', SQLSTATE;
END
$$;

-- Address classes: every range the guard knows
SELECT addr, appguard_address_class(addr::inet) AS class
FROM (VALUES
	('8.8.8.8'), ('1.1.1.1'), ('2606:4700::1111'),
	('127.0.0.1'), ('127.77.0.5'), ('::1'),
	('10.1.2.3'), ('172.16.0.1'), ('172.31.255.255'), ('172.32.0.1'),
	('192.168.1.1'),
	('169.254.1.1'), ('fe80::1'),
	('169.254.169.254'), ('fd00:ec2::254'), ('100.100.100.200'), ('192.0.0.192'),
	('100.64.0.1'), ('100.127.255.255'), ('100.128.0.1'),
	('0.0.0.0'), ('0.1.2.3'), ('::'),
	('224.0.0.1'), ('239.255.255.250'), ('ff02::1'),
	('255.255.255.255'), ('240.0.0.1'), ('192.0.0.8'),
	('192.0.2.1'), ('198.51.100.7'), ('203.0.113.9'), ('2001:db8::1'), ('3fff::1'), ('3fff:fff::1'), ('3fff:1000::1'),
	('198.18.0.1'), ('198.19.255.255'),
	('fc00::1'), ('fd12:3456::1'), ('fec0::1'),
	('::ffff:127.0.0.1'), ('::ffff:10.0.0.1'), ('::ffff:8.8.8.8'),
	('::127.0.0.1'), ('::10.0.0.1'),
	('64:ff9b::7f00:1'), ('64:ff9b::a00:1'), ('64:ff9b::808:808'), ('64:ff9b:1::1'),
	('2002:7f00:1::1'), ('2002:c0a8:101::1'), ('2002:808:808::1'),
	('2001::1'), ('100::1'), ('4000::1')
) AS t(addr);

-- The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215): a translator may
-- use a /48, /56, /64 or /96 inside it, so the IPv4 address is read at
-- each place RFC 6052 puts it (for a /48: bits 48-63 and 72-87, around the
-- u octet) and the most refused class wins
SELECT addr, appguard_address_class(addr::inet) AS class
FROM (VALUES
	('64:ff9b:1::a9fe:a9fe'),			-- 169.254.169.254 behind a /96
	('64:ff9b:1::7f00:1'),				-- 127.0.0.1 behind a /96
	('64:ff9b:1::a00:1'),				-- 10.0.0.1 behind a /96
	('64:ff9b:1::5db8:d822'),			-- 93.184.216.34 behind a /96
	('64:ff9b:1:a9fe:a9:fe00::'),		-- 169.254.169.254 behind a /48
	('64:ff9b:1:7f00:0:100::'),			-- 127.0.0.1 behind a /48
	('64:ff9b:1:5db8:d8:2200::'),		-- 93.184.216.34 behind a /48
	('64:ff9b:1:5d:b8:d822::'),			-- 93.184.216.34 behind a /56
	('64:ff9b:1:0:5d:b8d8:2200:0'),		-- 93.184.216.34 behind a /64
	('64:ff9b:1:0:a9:fea9:fe00:0'),		-- 169.254.169.254 behind a /64
	('64:ff9b:1:5db8:d8:2200:a9fe:a9fe'),	-- public as a /48, metadata as a /96
	('64:ff9b:1::')
) AS t(addr);

-- The decision: a class appguard.allow_private_addresses opens is allowed
-- when that setting is on, or when the address lies in a network of
-- appguard.allowed_networks; the classes never reachable stay refused
-- whatever is listed (metadata above all)
SELECT addr, allow_private, networks, appguard_address_allowed(addr::inet, allow_private, networks) AS allowed
FROM (VALUES
	('8.8.8.8', false, ''),
	('10.20.1.5', false, ''),
	('10.20.1.5', true, ''),
	('10.20.1.5', false, '10.20.0.0/16'),
	('10.21.1.5', false, '10.20.0.0/16'),
	('10.20.1.5', false, '192.168.0.0/16, 10.20.1.5'),
	('10.20.1.5', false, '10.20.1.4/31'),
	('10.20.1.6', false, '10.20.1.4/31'),
	('127.77.35.2', false, '127.77.35.2/32'),
	('127.77.35.3', false, '127.77.35.2/32'),
	('172.16.0.1', false, '172.16.0.0/12'),
	('192.168.1.1', false, '172.16.0.0/12'),
	('fd00:1::5', false, 'fd00:1::/48'),
	('fd00:2::5', false, 'fd00:1::/48'),
	('fd00:1::5', false, '10.0.0.0/8'),
	('::ffff:10.20.1.5', false, '10.20.0.0/16'),
	('10.20.1.5', false, '0.0.0.0/0'),
	('169.254.169.254', false, '169.254.0.0/16'),
	('169.254.169.254', true, '169.254.169.254'),
	('169.254.1.1', false, '169.254.0.0/16'),
	('224.0.0.1', true, '224.0.0.0/4'),
	('0.1.2.3', false, '0.0.0.0/8'),
	('192.0.2.1', true, '192.0.2.0/24')
) AS t(addr, allow_private, networks);
-- a malformed list is refused (22023), as the setting refuses it
SELECT appguard_address_allowed('10.0.0.1', false, '10.0.0.0/33');
SELECT appguard_address_allowed('10.0.0.1', false, '10.0.0.1/8');
SELECT appguard_address_allowed('10.0.0.1', false, '10.0.0.0/8,');
SELECT appguard_address_allowed('10.0.0.1', false, 'intranet');
SET appguard.allowed_networks = '10.20.0.0/16, fd00:1::/48';
SHOW appguard.allowed_networks;
SET appguard.allowed_networks = '10.20.0.0/16 10.30.0.0/16';
SET appguard.allowed_networks = '10.20.0.1/16';
RESET appguard.allowed_networks;

-- Ports: only those in appguard.allowed_ports (default 443).  A probe to
-- another port is refused before any packet is sent, and says why.
SET appguard.allowed_ports = '443';
SELECT p->>'status' AS status, p->>'error' AS error, p->'dns'->>'rcode' AS rcode, p->'tls' AS tls
FROM appguard_probe('app.example.org', 22) AS p;
SELECT appguard_probe('app.example.org', 0);
SELECT appguard_probe('app.example.org', 70000);
SELECT appguard_probe(NULL, 443) IS NULL AS strict_null;

-- The port list is validated when set
SET appguard.allowed_ports = '443, 8443-8450';
SHOW appguard.allowed_ports;
SET appguard.allowed_ports = '443,';
SET appguard.allowed_ports = '';
SET appguard.allowed_ports = '0';
SET appguard.allowed_ports = '9000-8000';
SET appguard.allowed_ports = 'https';
RESET appguard.allowed_ports;

-- The DNS server list is validated when set, and kept as c-ares reads it
-- (c-ares itself would take port 99999 as 34463 and "127.1" as 127.1.0.0)
SET appguard.dns_servers = '192.0.2.53, 192.0.2.54:5353 ,[2001:db8::53]:53, [2001:db8::54], 2001:db8::55';
SHOW appguard.dns_servers;
SET appguard.dns_servers = '';
SHOW appguard.dns_servers;
SET appguard.dns_servers = 'garbage';
SET appguard.dns_servers = '192.0.2.53:99999';
SET appguard.dns_servers = '192.0.2.53:0';
SET appguard.dns_servers = '192.0.2.53:';
SET appguard.dns_servers = '127.1';
SET appguard.dns_servers = '192.0.2.53,,192.0.2.54';
SET appguard.dns_servers = '[2001:db8::53';
SET appguard.dns_servers = '[192.0.2.53]:53';
SET appguard.dns_servers = '[fe80::1%lo]:53';
SHOW appguard.dns_servers;
RESET appguard.dns_servers;

-- Settings that widen the guard are superuser-only
CREATE ROLE appguard_regress_nobody;
CREATE ROLE appguard_regress_operator IN ROLE appguard_operator;
SET ROLE appguard_regress_nobody;
SET appguard.allow_private_addresses = on;
SET appguard.allowed_networks = '10.0.0.0/8';
SET appguard.allowed_ports = '22';
SET appguard.dns_servers = '192.0.2.53';
SET appguard.ca_file = '/etc/passwd';
-- so are the deadlines: a short one makes stored snapshots fail, and a
-- failed snapshot is as fresh as any to the next sweep
SET appguard.timeout_ms = 2000;
SET appguard.connect_timeout_ms = 50;
SET appguard.dns_timeout_ms = 30;
SELECT set_config('appguard.dns_timeout_ms', '30', false);
SHOW appguard.dns_timeout_ms;
SET appguard.sweep_concurrency = 4;		-- harmless: allowed
RESET appguard.sweep_concurrency;

-- A role without grants can call nothing
SELECT appguard_probe('app.example.org');
SELECT appguard_snapshot('app.example.org');
SELECT count(*) FROM appguard.snapshots;
RESET ROLE;

-- Not even with the schema: EXECUTE is not granted to PUBLIC
GRANT USAGE ON SCHEMA appguard TO appguard_regress_nobody;
SET ROLE appguard_regress_nobody;
SELECT appguard_probe('app.example.org', 22);
SELECT appguard_normalize_host('app.example.org');
RESET ROLE;
REVOKE USAGE ON SCHEMA appguard FROM appguard_regress_nobody;

-- The operator role may measure and read snapshots
SET ROLE appguard_regress_operator;
SELECT appguard_probe('app.example.org', 22)->>'status' AS status;
SELECT appguard_normalize_host('Operator.Example.org');
SELECT count(*) >= 0 AS can_read FROM appguard.snapshots;
INSERT INTO appguard.snapshots (host, port, taken_at, status, facts)
VALUES ('forged.example.org', 443, now(), 'ok', '{}');
RESET ROLE;

-- No function in the schema is executable by PUBLIC
SELECT p.oid::regprocedure AS function
FROM pg_proc p
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
  AND has_function_privilege('public', p.oid, 'EXECUTE');

DROP ROLE appguard_regress_operator;
DROP ROLE appguard_regress_nobody;
