#!/bin/bash
# Install every Debian package appguard's build, tests and demo need.
# Run as root on Debian 12.  Daemons the packages ship (nginx, knot) are not
# started: the tests run their own instances on loopback addresses.
set -euo pipefail

PACKAGES=(
	build-essential pkg-config rsync procps iproute2 openssl ca-certificates
	postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-partman postgresql-contrib
	libssl-dev libc-ares-dev libpsl-dev libidn2-dev publicsuffix
	libipc-run-perl
	nginx-light knot knot-dnsutils python3 python3-dnslib
	clang libclang-rt-dev
	valgrind
	glewlwyd
	chromium fonts-liberation
)

# Node.js and npm: the machine's own when it has them (this machine kind
# comes with Node.js 20 and npm 11, whose nodejs package conflicts with
# Debian's npm); else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The example auth server and the browser walk of test/t/070_oidc_provider.pl:
# node-oidc-provider, pg, puppeteer-core and axe-core from the npm registry,
# exactly as test/oidc-provider/package-lock.json pins them, into
# test/oidc-provider/node_modules (kept between runs; no browser download:
# puppeteer-core drives Debian's chromium).
npm_ci() {
	local dir
	dir="$(cd "$(dirname "$0")" && pwd)/oidc-provider"
	if [ ! -e "$dir/node_modules/.package-lock.json" ] ||
		[ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
		echo "install-deps: npm ci in $dir"
		(cd "$dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund)
	fi
}

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#PACKAGES[@]} packages present"
	npm_ci
	exit 0
fi

# Keep package scripts from starting system daemons (removed afterwards).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod 755 "$policy"
	own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
npm_ci
