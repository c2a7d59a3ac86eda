# Sourced by the benchmarks (lifecycle.sh, glewlwyd.sh), after they set
# ROOT (the repository) and PORT (their cluster's port).
#
# As root it builds (-Werror) and installs appguard, and as_pg runs a
# command as the postgres user; as any other user it expects appguard
# installed and as_pg runs the command as is.  Either way the server's
# binaries come first on PATH.
#
#   bench_workdir NAME FILE...   a work directory $WORK (/tmp/appguard-NAME.*)
#                                with copies of FILE... and test/cluster.sh,
#                                and a throwaway cluster in $WORK/pg on
#                                $PORT; both are removed at exit (the
#                                directory is kept with AG_KEEP=1)
BIN=$(pg_config --bindir)

if [ "$(id -u)" = 0 ]; then
	make -s -C "$ROOT" WERROR=1 >/dev/null
	make -s -C "$ROOT" install >/dev/null
	as_pg() { runuser -u postgres -- env PATH="$BIN:$PATH" ${AG_NET:+AG_NET=$AG_NET} "$@"; }
else
	as_pg() { env PATH="$BIN:$PATH" "$@"; }
fi

bench_cleanup() {
	as_pg bash "$WORK/cluster.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
	if [ "${AG_KEEP:-0}" = 1 ]; then echo "bench: kept $WORK"; else rm -rf "$WORK"; fi
}

bench_workdir() {
	local name=$1
	shift
	WORK=$(mktemp -d "/tmp/appguard-$name.XXXXXX")
	chmod 755 "$WORK"
	cp -a "$@" "$ROOT/test/cluster.sh" "$WORK/"
	if [ "$(id -u)" = 0 ]; then
		chown -R postgres:postgres "$WORK"
	fi
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	as_pg bash "$WORK/cluster.sh" start "$WORK/pg" "$PORT"
}
