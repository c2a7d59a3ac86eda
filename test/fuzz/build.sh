#!/bin/bash
# Build the libFuzzer harnesses with clang (Debian's clang and
# libclang-rt-dev): -fsanitize=fuzzer,address,undefined, every
# UBSan finding fatal.  The appguard modules are compiled from src/ as
# they are; shim.c stands in for the few backend symbols they use, and
# PostgreSQL's libpgcommon/libpgport give StringInfo, psprintf and the
# JSON parser.
#   test/fuzz/build.sh [OUTDIR]     (default test/fuzz/build)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$HERE/build}
CC=${CC:-clang}
PGINC=$(pg_config --includedir-server)
PGLIB=$(pg_config --pkglibdir)
mkdir -p "$OUT/obj"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
# PostgreSQL's own code generation flags: signed overflow wraps
CFLAGS="-g -O1 -Wno-ignored-attributes -fno-omit-frame-pointer -fwrapv -fno-strict-aliasing -D_GNU_SOURCE \
	-I$ROOT/src -I$HERE -I$PGINC $(pkg-config --cflags libcares openssl libpsl libidn2)"
LIBS="$PGLIB/libpgcommon.a $PGLIB/libpgport.a $(pkg-config --libs libcares openssl libpsl libidn2) -lm"

compile() {		# compile SOURCE -> obj/NAME.o with coverage for the fuzzer
	local src=$1 obj
	obj="$OUT/obj/$(basename "${src%.c}").o"
	if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ]; then
		$CC $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
	fi
}

harness() {		# harness NAME SOURCES...
	local name=$1 objs=()
	shift
	for src in "$@"; do
		compile "$src"
		objs+=("$OUT/obj/$(basename "${src%.c}").o")
	done
	$CC $SAN -fsanitize=fuzzer "${objs[@]}" $LIBS -o "$OUT/fuzz_$name"
	echo "built $OUT/fuzz_$name"
}

S=$ROOT/src
harness dns   "$HERE/fuzz_dns.c" "$S/dnswire.c" "$S/dns.c" "$S/facts_dns.c" "$S/jsonw.c" \
	"$HERE/shim.c" "$HERE/common.c"
harness tls   "$HERE/fuzz_tls.c" "$S/facts_tls.c" "$S/chainverify.c" "$S/keydecode.c" "$S/jsonw.c" \
	"$HERE/shim.c" "$HERE/common.c"
harness host  "$HERE/fuzz_host.c" "$S/guard.c"
harness drift "$HERE/fuzz_drift.c" "$S/drift_rules.c"
