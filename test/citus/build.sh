#!/bin/bash
# Build and install Citus into Debian's PostgreSQL 15 from the vendored
# source, unless that version is installed already (test/t/080_citus.pl
# needs it; Debian 12 packages no Citus).
#
#   bash test/citus/build.sh        (as root; about 2-4 minutes on 2 cores)
#
# The source is citus-13.2.2.tar.gz with its patch for Debian's 15.20
# (see that directory's README.md), looked up in $AG_CITUS_VENDOR, then in
# ../shared/vendor beside the repository and beside its parent directory.
# Without it, and with no Citus installed, it says so and exits 0: the
# Citus test then skips, saying why.  A build that fails fails the script.
set -euo pipefail

VERSION=13.2.2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIBDIR=$(pg_config --pkglibdir)

if [ -f "$LIBDIR/citus.so" ] && grep -aq "Citus $VERSION" "$LIBDIR/citus.so"; then
	echo "citus: $VERSION is installed"
	exit 0
fi

VENDOR=
for dir in "${AG_CITUS_VENDOR:-}" "$ROOT/../shared/vendor" "$ROOT/../../shared/vendor"; do
	if [ -n "$dir" ] && [ -f "$dir/citus-$VERSION.tar.gz" ]; then
		VENDOR=$(cd "$dir" && pwd)
		break
	fi
done
if [ -z "$VENDOR" ]; then
	echo "citus: no citus-$VERSION.tar.gz found (AG_CITUS_VENDOR, ../shared/vendor): Citus is not built, its test will skip"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "citus: run me as root (I install packages and Citus)" >&2
	exit 2
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev >/dev/null

WORK=$(mktemp -d /tmp/appguard-citus.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo "citus: building $VERSION from $VENDOR (a few minutes)"
tar xzf "$VENDOR/citus-$VERSION.tar.gz" -C "$WORK"
cd "$WORK/citus-$VERSION"
patch -s -p1 < "$VENDOR/citus-$VERSION-pg15.20.patch"
./configure PG_CONFIG="$(command -v pg_config)" >"$WORK/configure.log" 2>&1 ||
	{ tail -30 "$WORK/configure.log"; exit 1; }
make -j"$(nproc)" >"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log"; exit 1; }
make install >"$WORK/install.log" 2>&1 || { tail -30 "$WORK/install.log"; exit 1; }
grep -aq "Citus $VERSION" "$LIBDIR/citus.so"
echo "citus: $VERSION installed"
