#!/usr/bin/python3
"""Seed corpora for the appguard fuzzers, made at run time.

Usage: gen_seeds.py OUTDIR      -> OUTDIR/corpus-{dns,tls,host,drift}/

dns    answers built with dnslib: plain A/AAAA, CNAME chains and loops,
       1,000 records, TXT and CAA sets, SERVFAIL/NXDOMAIN, compression
tls    chains made with the openssl command: CA/intermediate/leaf, EV/OV
       policies, 1,000 SANs, empty subject, negative and huge serials,
       far past/future dates, an unknown critical extension, NUL in CN,
       EC keys, a truncated certificate, an OCSP-looking tail
host   host names: IDN, IP spellings, trailing dots, long labels, junk
drift  two facts views in fuzz_drift.c's encoding, from realistic values
"""

import os
import struct
import subprocess
import sys
import tempfile

from dnslib import AAAA, CNAME, NS, QTYPE, RR, TXT, A, DNSHeader, DNSQuestion, DNSRecord
from dnslib import RCODE

try:
    from dnslib import CAA
except ImportError:  # older dnslib
    CAA = None


def write(outdir, name, idx, data):
    path = os.path.join(outdir, "corpus-" + name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "seed-%03d" % idx), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- dns
def answer(qname, qtype, rrs=(), rcode=0, qid=4242, tc=False, ad=False):
    h = DNSHeader(id=qid, qr=1, aa=1, ra=1, rcode=rcode, tc=int(tc), ad=int(ad))
    r = DNSRecord(h, q=DNSQuestion(qname, getattr(QTYPE, qtype)))
    for rr in rrs:
        r.add_answer(rr)
    return r.pack()


def rr(name, rtype, rdata, ttl=60):
    return RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl)


def dns_seed(flags, msgs):
    out = bytes([flags])
    for m in msgs:
        out += struct.pack("!H", len(m)) + m
    return out


def dns_seeds():
    host = "www.example.test"
    caa = []
    if CAA is not None:
        caa = [rr("example.test", "CAA", CAA(0, "issue", "ca.test")),
               rr("example.test", "CAA", CAA(128, "issuewild", ";")),
               rr("example.test", "CAA", CAA(0, "iodef", "mailto:x@example.test"))]
    base = [
        answer(host, "A", [rr(host, "A", A("192.0.2.10")), rr(host, "A", A("192.0.2.9"))], ad=True),
        answer(host, "AAAA", [rr(host, "AAAA", AAAA("2001:db8::1"))]),
        answer("example.test", "NS", [rr("example.test", "NS", NS("ns1.provider.test")),
                                      rr("example.test", "NS", NS("NS2.Provider.Test"))]),
        answer("example.test", "TXT", [rr("example.test", "TXT", TXT("appguard-client-id=app1")),
                                       rr("example.test", "TXT", TXT(["v=spf1", " -all"])),
                                       rr("example.test", "TXT", TXT("appguard-client-id="))]),
        answer(host, "CAA", caa),
    ]
    seeds = [dns_seed(0, base)]
    # CNAME chain to an A record (alias.example.test is host 1)
    alias = "alias.example.test"
    chain = [rr(alias, "CNAME", CNAME("alias2.example.test")),
             rr("alias2.example.test", "CNAME", CNAME("target.example.test")),
             rr("target.example.test", "A", A("198.51.100.7"))]
    seeds.append(dns_seed(1, [answer(alias, "A", chain), answer(alias, "AAAA", chain[:2])]))
    # a CNAME loop (loop.example.test is host 5) and an over-long chain
    loop = [rr("loop.example.test", "CNAME", CNAME("loop2.example.test")),
            rr("loop2.example.test", "CNAME", CNAME("loop.example.test"))]
    seeds.append(dns_seed(5, [answer("loop.example.test", "A", loop)]))
    long_chain = [rr("alias.example.test" if i == 0 else "c%d.example.test" % i, "CNAME",
                     CNAME("c%d.example.test" % (i + 1))) for i in range(40)]
    seeds.append(dns_seed(1, [answer(alias, "A", long_chain)]))
    # 1,000 records in one answer (as over TCP)
    many = [rr(host, "A", A("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255))) for i in range(1000)]
    seeds.append(dns_seed(0, [answer(host, "A", many)]))
    # TXT with many strings, and a long one
    big_txt = rr("example.test", "TXT", TXT(["x" * 255] * 40))
    seeds.append(dns_seed(0, [b"", b"", b"", answer("example.test", "TXT", [big_txt])]))
    # rcodes, a truncated flag, a timeout pattern, the wrong question
    seeds.append(dns_seed(0, [answer(host, "A", rcode=RCODE.SERVFAIL),
                              answer(host, "AAAA", rcode=RCODE.NXDOMAIN),
                              answer("example.test", "NS", rcode=RCODE.REFUSED),
                              answer("example.test", "TXT", rcode=9),
                              answer(host, "CAA", rcode=RCODE.NXDOMAIN)]))
    seeds.append(dns_seed(0x18, [answer(host, "A", tc=True), b"", base[2]]))
    seeds.append(dns_seed(2, [answer("example.test", "A", [rr("example.test", "A", A("203.0.113.1"))])]))
    # hand-made: a compression pointer loop and a label past the end
    ptr_loop = struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0) + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04"
    seeds.append(dns_seed(0, [ptr_loop]))
    past_end = struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0) + b"\x3fabc"
    seeds.append(dns_seed(0, [past_end]))
    # the raw messages alone (dns_parse_message gets the whole input too)
    seeds.extend(base)
    return seeds


# ---------------------------------------------------------------- tls
def openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def der_of(pem_file, cwd):
    out = subprocess.run(("openssl", "x509", "-in", pem_file, "-outform", "DER"),
                         cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return out.stdout


def tls_seed(flags, ders, tail=b""):
    out = bytes([flags])
    for d in ders:
        out += struct.pack("!I", len(d))[1:] + d
    return out + tail


def tls_seeds():
    seeds = []
    with tempfile.TemporaryDirectory() as d:
        def key(name, spec=("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")):
            openssl("genpkey", *spec, "-out", name + ".key", cwd=d)

        def cnf(name, text):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)

        cnf("ca.ext", "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n")
        key("root")
        openssl("req", "-x509", "-new", "-key", "root.key", "-subj", "/C=US/O=Fuzz Root/CN=Fuzz Root CA",
                "-days", "3650", "-out", "root.pem", "-addext", "basicConstraints=critical,CA:true", cwd=d)
        key("int")
        openssl("req", "-new", "-key", "int.key", "-subj", "/O=Fuzz/CN=Fuzz Issuing CA", "-out", "int.csr", cwd=d)
        openssl("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "2",
                "-days", "3650", "-extfile", "ca.ext", "-out", "int.pem", cwd=d)

        def leaf(name, subj, ext, serial="1000", days="90", keyspec=None, ca=("int.pem", "int.key")):
            if keyspec:
                key(name, keyspec)
            else:
                key(name)
            openssl("req", "-new", "-key", name + ".key", "-subj", subj, "-out", name + ".csr", cwd=d)
            cnf(name + ".ext", ext)
            openssl("x509", "-req", "-in", name + ".csr", "-CA", ca[0], "-CAkey", ca[1],
                    "-set_serial", serial, "-days", days, "-extfile", name + ".ext",
                    "-out", name + ".pem", cwd=d)
            return der_of(name + ".pem", d)

        root, inter = der_of("root.pem", d), der_of("int.pem", d)
        base_ext = "subjectAltName=DNS:www.example.test,DNS:*.example.test\nextendedKeyUsage=serverAuth\n"
        ev = leaf("ev", "/C=US/ST=Missouri/L=St. Louis/O=Example Health, Inc./CN=www.example.test",
                  base_ext + "certificatePolicies=2.23.140.1.1,1.3.6.1.4.1.99.1\n")
        seeds.append(tls_seed(1, [ev, inter, root]))
        seeds.append(tls_seed(0, [ev, inter]))
        seeds.append(tls_seed(1, [ev, root, inter]))  # out of order
        ov = leaf("ov", "/C=DE/O=Beispiel GmbH/CN=www.example.test",
                  base_ext + "certificatePolicies=2.23.140.1.2.2\n", keyspec=("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"))
        seeds.append(tls_seed(1, [ov, inter, root]))
        sans = ",".join("DNS:n%d.example.test" % i for i in range(1000))
        seeds.append(tls_seed(1, [leaf("sans", "/CN=n0.example.test", "subjectAltName=" + sans + "\n"), inter, root]))
        seeds.append(tls_seed(0, [leaf("empty", "/", "subjectAltName=critical,DNS:www.example.test\n")]))
        seeds.append(tls_seed(0, [leaf("neg", "/CN=www.example.test", base_ext, serial="-12345")]))
        seeds.append(tls_seed(0, [leaf("huge", "/CN=www.example.test", base_ext, serial="0x" + "7f" * 40)]))
        seeds.append(tls_seed(0, [leaf("future", "/CN=www.example.test", base_ext, days="2900000")]))
        seeds.append(tls_seed(0, [leaf("crit", "/CN=www.example.test",
                                       base_ext + "1.3.6.1.4.1.55555.1=critical,ASN1:UTF8String:unknown\n")]))
        # NUL inside the CN: patch a marker byte (the signature no longer matches,
        # which is a fact like any other)
        nul = leaf("nul", "/CN=www.example.testQQQevil.test", "extendedKeyUsage=serverAuth\n")
        seeds.append(tls_seed(0, [nul.replace(b"QQQ", b"\x00\xff\x00", 1), inter]))
        seeds.append(tls_seed(2, [ev[: len(ev) // 2], inter]))  # truncated
        seeds.append(tls_seed(1, [ev, inter, root], tail=b"\x30\x03\x0a\x01\x00"))  # OCSP: malformedRequest
        seeds.append(tls_seed(0, []))
    return seeds


# ---------------------------------------------------------------- host
HOSTS = [
    "www.example.test", "WWW.Example.TEST.", "bücher.example", "ＥＸＡＭＰＬＥ.ｃｏｍ",
    "xn--bcher-kva.example", "xn--.example", "a" * 63 + ".example", "a" * 64 + ".example",
    ".".join(["a" * 60] * 5), "127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "0x7f.0x1.",
    "::1", "[::1]", "[2001:db8::1]", "localhost", "-bad.example", "bad-.example", "a..b",
    "a.b.", ".", "a.123", "a.0x1f", "https://x.example/", "x.example:443", "a b.example",
    "a\tb.example", "a\x00b.example", "\u00a0.example", "😀.example", "ß.example", "ς.example",
    "a\u200db.example", "١٢٣.example", "e\u0301.example", "443, 8443-8450", "1-65535", "0",
    "10.20.0.0/16, fd00:1::/48", "127.77.35.2/32", "0.0.0.0/0", "169.254.0.0/16", "10.0.0.1/8", "::/0",
    "192.0.2.53, 192.0.2.54:5353", "[2001:db8::53]:53,2001:db8::54", "[::1]", "127.0.0.1:65535",
]


# ---------------------------------------------------------------- drift
def drift_text(v):
    if v is None:
        return b"\x01"
    return b"\x02" + v.encode() + b"\x00"


def drift_list(items):
    if items is None:
        return b"\x00"
    return bytes([(len(items) << 1) | 1]) + b"".join(i.encode() + b"\x00" for i in items)


def drift_view(status_ok=True, rcode=1, queries=(1, 1, 1, 1, 1), ad=(1, 1), cname=(), a=("192.0.2.1",),
               aaaa=(), ns=("ns1.p.test",), caa=("0 issue ca.test",), ids=("app1",), verified=True,
               verify_error=None, version="TLSv1.3", validation="EV",
               subject=("Example Health, Inc.", "US", "Missouri", "St. Louis"), issuer="Fuzz CA",
               serial="01", sha="aa", spki="bb", nb="2024-01-01T00:00:00Z", na="2025-01-01T00:00:00Z",
               inter="cc", address="192.0.2.10", addresses=((0, True, True, None, "aa", "Example Health, Inc.", "EV"),
                                                             (1, True, True, None, "aa", "Example Health, Inc.", "EV"))):
    out = bytes([1 if status_ok else 0, rcode]) + bytes(queries)
    out += bytes([ad[0] | (ad[1] << 1)])
    for lst in (cname, a, aaaa, ns, caa, ids):
        out += drift_list(list(lst) if lst is not None else None)
    out += bytes([1 | (2 if verified else 0)])
    for t in (verify_error, version, validation) + tuple(subject) + (issuer, serial, sha, spki, nb, na, inter):
        out += drift_text(t)
    out += drift_text(address)
    out += drift_addresses(addresses)
    return out


def drift_addresses(entries):
    """fuzz_drift.c's next_addresses: entries are (pool index or a string,
    measured, verified, verify_error, leaf_sha256, subject_o, validation);
    None is a list that is not known"""
    if entries is None:
        return b"\x00"
    out = bytes([(len(entries) << 1) | 1])
    for where, measured, verified, err, leaf, org, validation in entries:
        flags = (8 if measured else 0) | (where if isinstance(where, int) else 4)
        out += bytes([flags])
        if not isinstance(where, int):
            out += where.encode() + b"\x00"
        out += bytes([1 | (2 if verified else 0)])
        for t in (err, leaf, org, validation):
            out += drift_text(t)
    return out


def drift_seeds():
    base = drift_view()
    seeds = [
        base + base + b"\x01app1\x00",
        base + drift_view(verified=False, verify_error="certificate has expired") + b"\x00",
        base + drift_view(validation="DV", subject=(None, None, None, None)) + b"\x01app1\x00",
        base + drift_view(subject=("EXAMPLE HEALTH LLC", "US", "MO", "St.Louis")) + b"\x00",
        base + drift_view(ids=()) + b"\x01app1\x00",
        base + drift_view(rcode=2, queries=(2, 2, 1, 1, 1), a=()) + b"\x00",
        base + drift_view(status_ok=False, rcode=2, queries=(2, 2, 2, 2, 2)) + b"\x00",
        base + drift_view(ns=("NS1.P.TEST.",), cname=("x.cdn.test",), caa=(), version="TLSv1",
                          ad=(1, 0), serial="02", a=("192.0.2.2",)) + b"\x00",
        drift_view(subject=("a" * 2000, "US", None, None)) + drift_view(subject=("a" * 2000 + " inc", "US", None, None)) + b"\x00",
        # dangling CNAME: the chain's end gone (NXDOMAIN), then without an address (NODATA)
        base + drift_view(status_ok=False, rcode=2, queries=(2, 2, 1, 1, 1), cname=("gone.cloud.test",),
                          a=()) + b"\x01app1\x00",
        base + drift_view(status_ok=False, queries=(1, 1, 1, 1, 1), cname=("a.cdn.test", "b.cloud.test"),
                          a=()) + b"\x00",
        # a chain of 16 steps (the most a document records) whose end is unknown
        base + drift_view(status_ok=False, cname=tuple("hop%d.test" % i for i in range(16)), a=()) + b"\x00",
        # every address: the second one serves another organization's
        # certificate, then an untrusted one; one comes and one goes; a
        # baseline without the list
        base + drift_view(addresses=((0, True, True, None, "aa", "Example Health, Inc.", "EV"),
                                     (1, True, True, None, "dd", "Northwind Data Brokers LLC", "OV"))) + b"\x00",
        base + drift_view(addresses=((0, True, True, None, "aa", "Example Health, Inc.", "EV"),
                                     (1, True, False, "self-signed certificate", "ee", None, None))) + b"\x00",
        base + drift_view(addresses=((0, True, True, None, "aa", "Example Health, Inc.", "EV"),
                                     (3, True, True, None, "ff", "EXAMPLE HEALTH LLC", "OV"),
                                     (2, False, False, None, None, None, None))) + b"\x00",
        drift_view(addresses=None) + drift_view(addresses=((0, True, True, None, "aa", "Example Health, Inc.", "EV"),
                                                          ("198.51.100.7", True, True, None, "dd", "Other", "DV"))) + b"\x00",
    ]
    return seeds


def main(outdir):
    counts = {}
    for name, seeds in (("dns", dns_seeds()), ("tls", tls_seeds()),
                        ("host", [h.encode() for h in HOSTS]), ("drift", drift_seeds())):
        for i, s in enumerate(seeds):
            write(outdir, name, i, s)
        counts[name] = len(seeds)
    print("seeds: " + ", ".join("%s %d" % kv for kv in counts.items()))


if __name__ == "__main__":
    main(sys.argv[1])
