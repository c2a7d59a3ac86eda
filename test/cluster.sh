#!/bin/bash
# A throwaway PostgreSQL 15 cluster for the tests and the demo.
#   test/cluster.sh start DIR PORT   (as the postgres user)
#   test/cluster.sh stop DIR
# The cluster listens only on a Unix socket in DIR, preloads pg_cron and
# appguard (the supported set-up: see the README's Settings), sends
# appguard's DNS questions to 127.0.0.1:9, and is destroyed by stop.
set -euo pipefail
BIN=$(pg_config --bindir)
cmd=$1 dir=$2

case "$cmd" in
start)
	port=$3
	rm -rf "$dir"
	mkdir -p "$dir"
	"$BIN/initdb" -D "$dir/data" -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
	cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_preload_libraries = 'pg_cron, appguard'
cron.database_name = 'postgres'
fsync = off
log_min_messages = warning
# a probe no test means to make asks a port where nothing answers, on loopback,
# never the machine's resolver (the demo sets its own servers below this)
appguard.dns_servers = '127.0.0.1:9'
CONF
	"$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
	;;
stop)
	if [ -f "$dir/data/postmaster.pid" ]; then
		"$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
	fi
	rm -rf "$dir"
	;;
*)
	echo "usage: $0 start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
