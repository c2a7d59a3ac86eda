#!/bin/bash
# What a DBA would script without appguard, one host at a time: the DNS
# facts with kdig (the questions appguard asks), then the certificate with
# openssl s_client (verified against the CA file, OCSP status asked) piped
# to openssl x509 for the leaf's facts.  The address comes from kdig: the
# test names exist only in the test DNS server.
#   dba_loop.sh DNS_ADDR DNS_PORT CA_FILE PORT HOST...
set -uo pipefail
dns=$1 dport=$2 ca=$3 port=$4
shift 4
for h in "$@"; do
	domain=${h#*.}
	kdig @"$dns" -p "$dport" +timeout=2 +retry=1 +noall +answer \
		"$h" AAAA "$domain" NS "$domain" TXT "$h" CAA >/dev/null
	addr=$(kdig @"$dns" -p "$dport" +timeout=2 +retry=1 +short "$h" A | head -1)
	openssl s_client -connect "$addr:$port" -servername "$h" -CAfile "$ca" \
		-verify_hostname "$h" -status -showcerts </dev/null 2>/dev/null |
		openssl x509 -noout -subject -issuer -serial -dates -fingerprint -sha256 \
			-ext subjectAltName,certificatePolicies >/dev/null 2>&1 ||
		echo "dba_loop: failed: $h" >&2
done
