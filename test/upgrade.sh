#!/bin/bash
# The upgrade test: the last release recorded in RELEASES against the
# working tree (its version is the Makefile's EXTVERSION).
#
# When the versions differ: the release is taken from its commit (git
# archive) and built, the working tree too; in a private cluster, database
# A gets the release, the rows of test/upgrade/fixture.sql, then the
# working tree's build and ALTER EXTENSION appguard UPDATE; database B is a
# fresh install of the working tree given the same rows.  Then both get
# the rows of test/upgrade/fixture_after.sql, which only the working
# tree's API can make (tables the release does not have).  A and B must
# have the same schema and the same rows.  A missing upgrade script fails
# the UPDATE; one that leaves out or gets wrong an object, a grant or a row
# of the install script fails a comparison.
#
# When the working tree's version is the last release's, or no release is
# recorded yet, it says so and checks instead that a dump of A (a fresh
# install with the fixture's rows) restored into a new database C gives the
# same schema and rows (pg_extension_config_dump at work); with a release
# recorded, also that the install script is still the release's (a change
# to it needs a new version and an upgrade script).
#
# Compared: the schema by pg_dump --schema-only --binary-upgrade (plain
# pg_dump shows an extension as one CREATE EXTENSION line), normalised by
# test/upgrade/normalize.pl (entry order, OIDs, column order, dropped
# columns); the rows by test/upgrade/rows.sql (every table and sequence of
# the extension, found through pg_depend; times and backend pids masked).
# The test fails if the fixture leaves a table of the extension empty.
#
# The installed PostgreSQL and appguard are not touched: the builds go into
# a private copy of PostgreSQL 15 (as test/sanitize.sh does), whose server
# runs on a Unix socket in a temporary directory, so no lock is needed and
# no network either.  Run as root (the cluster runs as the postgres user)
# or as any user; git must be able to read the repository.
#   AG_UPGRADE_PORT   the cluster's port (default 57431)
#   AG_KEEP=1         keep the work directory (builds, dumps, diffs, logs)
# Ends with "upgrade: N passed, M failed"; exit status non-zero on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
passed=0
failed=0
say() { echo "upgrade: $*"; }
pass() { say "ok: $*"; passed=$((passed + 1)); }
fail() { say "FAILED: $*"; failed=$((failed + 1)); }
finish() {
	say "took $(($(date +%s) - start)) s"
	say "$passed passed, $failed failed"
	exit $((failed > 0))
}
git_() { git -c safe.directory='*' -C "$ROOT" "$@"; }

# ---- versions
VERSION=$(sed -nE 's/^EXTVERSION[[:space:]]*=[[:space:]]*([^[:space:]#]+).*/\1/p' "$ROOT/Makefile")
control=$(sed -nE "s/^default_version[[:space:]]*=[[:space:]]*'([^']*)'.*/\1/p" "$ROOT/appguard.control")
if [ -z "$VERSION" ] || [ "$VERSION" != "$control" ]; then
	fail "the Makefile's EXTVERSION ($VERSION) and appguard.control's default_version ($control) differ"
	finish
fi
REL_VERSION= REL_COMMIT=
if [ -f "$ROOT/RELEASES" ]; then
	line=$(grep -vE '^[[:space:]]*(#|$)' "$ROOT/RELEASES" | tail -1 || true)
	read -r REL_VERSION REL_COMMIT rest <<<"$line" || true
	if [ -n "$REL_VERSION" ]; then
		if ! [[ "$REL_COMMIT" =~ ^[0-9a-f]{40}$ ]] || [ -n "${rest:-}" ]; then
			fail "RELEASES: the last line must be \"VERSION COMMIT\" with a full commit hash: $line"
			finish
		fi
		if ! git_ cat-file -e "$REL_COMMIT^{commit}" 2>/dev/null; then
			fail "RELEASES: commit $REL_COMMIT of $REL_VERSION is not in this repository"
			finish
		fi
		if ! git_ merge-base --is-ancestor "$REL_COMMIT" HEAD; then
			fail "RELEASES: commit $REL_COMMIT of $REL_VERSION is not in the history of HEAD"
			finish
		fi
		was=$(git_ show "$REL_COMMIT:Makefile" | sed -nE 's/^EXTVERSION[[:space:]]*=[[:space:]]*([^[:space:]#]+).*/\1/p')
		if [ "$was" != "$REL_VERSION" ]; then
			fail "RELEASES: commit $REL_COMMIT has EXTVERSION $was, not $REL_VERSION"
			finish
		fi
	fi
fi
if [ -z "$REL_VERSION" ]; then
	MODE=restore
	say "no release recorded in RELEASES yet: checking a dump and restore of a fresh install of $VERSION"
elif [ "$REL_VERSION" = "$VERSION" ]; then
	MODE=restore
	say "the working tree's version $VERSION is the last release (${REL_COMMIT:0:12}): no upgrade to test;" \
		"checking a dump and restore of a fresh install"
else
	MODE=upgrade
	say "upgrading release $REL_VERSION (${REL_COMMIT:0:12}) to the working tree's $VERSION"
fi

# ---- a work directory the postgres user can use
WORK=$(mktemp -d /tmp/appguard-upgrade.XXXXXX)
chmod 755 "$WORK"
if [ "$(id -u)" = 0 ]; then
	chown postgres: "$WORK"
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi
CL=$WORK/cluster
PG=$WORK/pg
PGBIN=$PG$(pg_config --bindir)
PORT=${AG_UPGRADE_PORT:-57431}
cleanup() {
	[ -f "$CL/data/postmaster.pid" ] && as_pg env PATH="$PGBIN:$PATH" bash "$WORK/new/test/cluster.sh" stop "$CL" || true
	if [ "${AG_KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---- sources and builds (a private copy of PostgreSQL receives them)
SYSBIN=$(pg_config --bindir)
SYSLIB=$(pg_config --pkglibdir)
SYSSHARE=$(pg_config --sharedir)
mkdir -p "$PG$(dirname "$SYSBIN")" "$PG$(dirname "$SYSSHARE")"
cp -a "$SYSBIN" "$PGBIN"
[ -d "$PG$SYSLIB" ] || cp -a "$SYSLIB" "$PG$SYSLIB"
cp -a "$SYSSHARE" "$PG$SYSSHARE"
# whatever appguard the system has installed must not leak into the test
rm -rf "$PG$SYSLIB/appguard.so" "$PG$SYSLIB/bitcode/appguard" "$PG$SYSLIB/bitcode/appguard.index.bc" \
	"$PG$SYSSHARE"/extension/appguard[.-]*
[ "$("$PGBIN/pg_config" --bindir)" = "$PGBIN" ] || { fail "the copy of PostgreSQL is not relocatable"; finish; }

rsync -a --exclude .git --exclude tmp_check --exclude results --exclude output_iso --exclude log \
	--exclude test/fuzz/build --exclude 'test/fuzz/corpus-*' "$ROOT/" "$WORK/new/"
if [ -n "$REL_VERSION" ]; then
	mkdir "$WORK/old"
	git_ archive "$REL_COMMIT" | tar -x -C "$WORK/old"
fi
build() {	# build DIR NAME: make, with the system's pg_config
	make -s -C "$1" PG_CONFIG="$SYSBIN/pg_config" clean >/dev/null 2>&1
	if ! make -s -C "$1" PG_CONFIG="$SYSBIN/pg_config" -j"$(nproc)" >"$WORK/build-$2.log" 2>&1; then
		cat "$WORK/build-$2.log"
		fail "build of $2"
		finish
	fi
}
install_() {	# install_ DIR NAME: into the private copy
	if ! make -s -C "$1" PG_CONFIG="$SYSBIN/pg_config" DESTDIR="$PG" install >"$WORK/install-$2.log" 2>&1; then
		cat "$WORK/install-$2.log"
		fail "install of $2"
		finish
	fi
}
if [ "$MODE" = upgrade ]; then
	build "$WORK/old" "$REL_VERSION"
fi
build "$WORK/new" "$VERSION"

# ---- the cluster and the databases
pg() { as_pg env PATH="$PGBIN:$PATH" PGHOST="$CL" PGPORT="$PORT" "$@"; }
psql_() { pg psql -X -q -v ON_ERROR_STOP=1 "$@"; }
restart() { pg pg_ctl -D "$CL/data" -w restart -m fast >/dev/null; }
if [ "$MODE" = upgrade ]; then install_ "$WORK/old" "$REL_VERSION"; else install_ "$WORK/new" "$VERSION"; fi
pg bash "$WORK/new/test/cluster.sh" start "$CL" "$PORT"

populate() {	# populate DB: a database with the extension and the fixture's rows
	psql_ -d postgres -c "CREATE DATABASE $1"
	if ! psql_ -d "$1" -c 'CREATE EXTENSION appguard' -f "$WORK/new/sql/lifecycle_helpers.inc" \
		-f "$WORK/new/test/upgrade/fixture.sql" >"$WORK/fixture-$1.log" 2>&1; then
		cat "$WORK/fixture-$1.log"
		return 1
	fi
}
after() {	# after DB: the rows only the working tree's API can make (test/upgrade/fixture_after.sql)
	if ! psql_ -d "$1" -f "$WORK/new/test/upgrade/fixture_after.sql" >"$WORK/fixture-after-$1.log" 2>&1; then
		cat "$WORK/fixture-after-$1.log"
		return 1
	fi
}
dump() {	# dump DB: its normalised schema and rows in $WORK/{schema,rows}-DB.txt, empty tables in empty-DB.txt
	pg pg_dump --schema-only --binary-upgrade -d "$1" >"$WORK/dump-$1.sql"
	perl "$WORK/new/test/upgrade/normalize.pl" schema <"$WORK/dump-$1.sql" >"$WORK/schema-$1.txt"
	psql_ -At -d "$1" -f "$WORK/new/test/upgrade/rows.sql" >"$WORK/rows-$1.raw"
	perl "$WORK/new/test/upgrade/normalize.pl" rows <"$WORK/rows-$1.raw" >"$WORK/rows-$1.txt" 2>"$WORK/empty-$1.txt"
}
filled() {	# filled DB WHAT
	if [ -s "$WORK/empty-$1.txt" ]; then
		fail "$2: test/upgrade/fixture.sql left tables of the extension empty:" \
			"$(sed 's/^EMPTY: //' "$WORK/empty-$1.txt" | tr '\n' ' ')"
	else
		pass "$2: every table of the extension has rows ($(grep -c '^== table ' "$WORK/rows-$1.txt") tables)"
	fi
}
same() {	# same A B WHAT
	for k in schema rows; do
		[ $k = schema ] && differ=differs || differ=differ
		if diff -u "$WORK/$k-$1.txt" "$WORK/$k-$2.txt" >"$WORK/$k-$1-$2.diff"; then
			pass "$3: the same $k ($(wc -l <"$WORK/$k-$1.txt") lines)"
		else
			fail "$3: the $k $differ (- $1, + $2; $(grep -c '^[-+][^-+]' "$WORK/$k-$1-$2.diff") lines):"
			head -80 "$WORK/$k-$1-$2.diff"
		fi
	done
}

# Upgrade cases (test/upgrade/cases/NAME.{before,after}.sql, NAME.out): a
# database of its own per case gets the release and NAME.before.sql; after
# the working tree is installed, NAME.after.sql (which starts with ALTER
# EXTENSION appguard UPDATE) must print exactly NAME.out.
cases_before() {
	local f name
	for f in "$WORK/new/test/upgrade/cases/"*.before.sql; do
		[ -e "$f" ] || continue
		name=$(basename "$f" .before.sql)
		psql_ -d postgres -c "CREATE DATABASE case_$name"
		psql_ -d "case_$name" -c 'CREATE EXTENSION appguard' -f "$WORK/new/sql/lifecycle_helpers.inc" \
			-f "$f" >"$WORK/case-$name-before.log" 2>&1 || { cat "$WORK/case-$name-before.log"; fail "upgrade case $name: $name.before.sql"; }
	done
}
cases_after() {
	local f name
	for f in "$WORK/new/test/upgrade/cases/"*.after.sql; do
		[ -e "$f" ] || continue
		name=$(basename "$f" .after.sql)
		psql_ -a -d "case_$name" <"$f" >"$WORK/case-$name.out" 2>&1 || true
		if diff -u "$WORK/new/test/upgrade/cases/$name.out" "$WORK/case-$name.out" >"$WORK/case-$name.diff"; then
			pass "upgrade case $name: as test/upgrade/cases/$name.out"
		else
			fail "upgrade case $name: output differs from test/upgrade/cases/$name.out ($WORK/case-$name.out):"
			head -60 "$WORK/case-$name.diff"
		fi
	done
}

if [ "$MODE" = upgrade ]; then
	if populate a; then dump a; filled a "release $REL_VERSION with the fixture (A)"; else fail "the fixture on release $REL_VERSION"; finish; fi
	cases_before
	install_ "$WORK/new" "$VERSION"
	restart		# a preloaded library would keep the release's code
	if psql_ -d a -c "ALTER EXTENSION appguard UPDATE TO '$VERSION'" >"$WORK/update.log" 2>&1; then
		pass "ALTER EXTENSION appguard UPDATE from $REL_VERSION to $VERSION"
	else
		cat "$WORK/update.log"
		fail "ALTER EXTENSION appguard UPDATE from $REL_VERSION to $VERSION" \
			"(does sql/appguard--$REL_VERSION--$VERSION.sql exist?)"
		finish
	fi
	# (the helpers again, as the working tree's install has them: their view
	# of tokens reads what the update added)
	if ! psql_ -d a -f "$WORK/new/sql/lifecycle_helpers.inc" >"$WORK/helpers-a.log" 2>&1; then
		cat "$WORK/helpers-a.log"; fail "sql/lifecycle_helpers.inc on the upgraded database (A)"; finish
	fi
	if ! after a; then fail "test/upgrade/fixture_after.sql on the upgraded database (A)"; finish; fi
	cases_after
	dump a
	if populate b && after b; then dump b; filled b "a fresh $VERSION with the fixture (B)"; else fail "the fixture on $VERSION"; finish; fi
	same a b "upgraded (A) and fresh (B)"
else
	if [ -n "$REL_VERSION" ]; then
		make -s -C "$WORK/old" "sql/appguard--$REL_VERSION.sql" >/dev/null
		if diff -u <(tail -n +2 "$WORK/old/sql/appguard--$REL_VERSION.sql") \
			<(tail -n +2 "$WORK/new/sql/appguard--$VERSION.sql") >"$WORK/script.diff"; then
			pass "the install script is release $REL_VERSION's"
		else
			fail "the install script changed since release $REL_VERSION: bump EXTVERSION and" \
				"default_version, and ship sql/appguard--$REL_VERSION--NEW.sql"
			head -40 "$WORK/script.diff"
		fi
	fi
	if populate a && after a; then dump a; filled a "a fresh $VERSION with the fixture (A)"; else fail "the fixture on $VERSION"; finish; fi
	pg pg_dump -Fc -d a -f "$WORK/a.dump"
	psql_ -d postgres -c "CREATE DATABASE c"
	# as the README says to restore a database with appguard: with
	# appguard's triggers (and event triggers) idle while the rows come back
	if PGOPTIONS='-c session_replication_role=replica' pg pg_restore --exit-on-error -d c "$WORK/a.dump" \
		>"$WORK/restore.log" 2>&1; then
		pass "pg_dump of A restored into C"
		dump c
		same a c "fresh (A) and restored (C)"
	else
		cat "$WORK/restore.log"
		fail "pg_dump of A restored into C"
	fi
fi
finish
