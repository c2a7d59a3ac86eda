#!/usr/bin/python3
"""A scripted DNS server for the faults knotd cannot produce.

Usage: dnsfault.py SPEC.json READY_FILE

SPEC.json: {"host": ADDR, "port": PORT, "target": ADDR (the A record of
names that resolve), "late_ms": MS}.  One UDP and one TCP listener.  What
a question gets depends on its case, the label before ".test"
(www.CASE.test, CASE.test):

  ok       a plain zone: A target, no AAAA, NS, a TXT, no CAA
  trunc    over UDP: TC=1 and no records; over TCP: as ok
  garbage  the right id and question, then bytes that are no records
  noise    random bytes, nothing like a DNS message
  wrongid  the ok answer with another query id
  late     the ok answer after late_ms milliseconds
  loop     A/AAAA: www CNAME loop2, loop2 CNAME www (a loop)
  chain    A/AAAA: a chain of 30 CNAMEs, then A target
  many     A: 1,000 records (target first in order); over UDP truncated
  bigtxt   TXT: 200 strings of 255 bytes (51 KB, TCP only); else as ok
  nul      TXT and CAA with NUL bytes: "appguard-client-id=fault-app\0 (not really)",
           "\0hidden" and "appguard-client-id=nul-app"; CAA tag "issue\0x" and two issue
           values that differ after a NUL; else as ok
READY_FILE is created once both listeners are bound.
"""

import asyncio
import json
import os
import struct
import sys

from dnslib import AAAA, CAA, CNAME, NS, QTYPE, RR, TXT, A, DNSRecord

MAX_UDP = 1232


def case_of(qname):
    labels = str(qname).rstrip(".").lower().split(".")
    return labels[-2] if len(labels) >= 2 and labels[-1] == "test" else ""


def ok_records(req, spec):
    q = req.q
    name, qtype = str(q.qname), QTYPE[q.qtype]
    case = case_of(q.qname)
    apex = case + ".test"
    out = []
    if qtype == "A" and name.lower().startswith("www."):
        out.append(RR(name, QTYPE.A, rdata=A(spec["target"]), ttl=60))
    elif qtype == "NS" and name.lower().rstrip(".") == apex:
        out.append(RR(name, QTYPE.NS, rdata=NS("ns1.dnsfault.test"), ttl=60))
    elif qtype == "TXT" and name.lower().rstrip(".") == apex:
        if case == "bigtxt":
            out.append(RR(name, QTYPE.TXT, rdata=TXT(["%03d" % i + "x" * 252 for i in range(200)]), ttl=60))
        else:
            out.append(RR(name, QTYPE.TXT, rdata=TXT("appguard-client-id=fault-app"), ttl=60))
    return out


def build(req, spec, tcp):
    """The reply bytes for a request, or None for no reply."""
    case = case_of(req.q.qname)
    qtype = QTYPE[req.q.qtype]
    reply = req.reply()
    reply.header.aa = 1
    if case == "noise":
        return os.urandom(40)
    if case == "garbage":
        raw = bytearray(reply.pack())
        raw[6:8] = struct.pack("!H", 3)  # three answers follow...
        return bytes(raw) + b"\xc0\x0c\x00\x01\x00\x01" + os.urandom(23)  # ...that are not records
    if case == "trunc" and not tcp:
        reply.header.tc = 1
        return reply.pack()
    name = str(req.q.qname)
    if case == "loop" and qtype in ("A", "AAAA"):
        other = "loop2.loop.test"
        reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(other), ttl=60))
        reply.add_answer(RR(other, QTYPE.CNAME, rdata=CNAME(name), ttl=60))
    elif case == "chain" and qtype in ("A", "AAAA"):
        prev = name
        for i in range(1, 31):
            nxt = "c%d.chain.test" % i
            reply.add_answer(RR(prev, QTYPE.CNAME, rdata=CNAME(nxt), ttl=60))
            prev = nxt
        if qtype == "A":
            reply.add_answer(RR(prev, QTYPE.A, rdata=A(spec["target"]), ttl=60))
    elif case == "nul" and qtype in ("TXT", "CAA") and name.lower().rstrip(".") == "nul.test":
        if qtype == "TXT":
            for value in (b"appguard-client-id=fault-app\x00 (not really)", b"\x00hidden",
                          b"appguard-client-id=nul-app"):
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT([value]), ttl=60))
        else:
            for tag, value in (("issue\x00x", "ca.test"), ("issue", "ca.test\x00a"), ("issue", "ca.test\x00b")):
                reply.add_answer(RR(name, QTYPE.CAA, rdata=CAA(0, tag, value), ttl=60))
    elif case == "many" and qtype == "A":
        reply.add_answer(RR(name, QTYPE.A, rdata=A(spec["target"]), ttl=60))
        for i in range(999):
            reply.add_answer(RR(name, QTYPE.A, rdata=A("127.254.%d.%d" % (i // 250, 1 + i % 250)), ttl=60))
    else:
        for rr in ok_records(req, spec):
            reply.add_answer(rr)
    data = reply.pack()
    if case == "wrongid":
        data = struct.pack("!H", (req.header.id ^ 0x5a5a) & 0xFFFF) + data[2:]
    if not tcp and len(data) > MAX_UDP:
        reply = req.reply()
        reply.header.tc = 1
        data = reply.pack()
    return data


async def answer(data, spec, tcp, send):
    try:
        req = DNSRecord.parse(data)
    except Exception:
        return
    if case_of(req.q.qname) == "late":
        await asyncio.sleep(spec.get("late_ms", 3000) / 1000.0)
    out = build(req, spec, tcp)
    if out is not None:
        send(out)


class Udp(asyncio.DatagramProtocol):
    def __init__(self, spec):
        self.spec = spec

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        asyncio.ensure_future(answer(data, self.spec, False, lambda out: self.transport.sendto(out, addr)))


async def tcp_client(reader, writer, spec):
    try:
        while True:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            data = await reader.readexactly(n)
            await answer(data, spec, True, lambda out: writer.write(struct.pack("!H", len(out)) + out))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def main(spec_file, ready_file):
    with open(spec_file) as f:
        spec = json.load(f)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Udp(spec), local_addr=(spec["host"], spec["port"]))
    server = await asyncio.start_server(lambda r, w: tcp_client(r, w, spec), spec["host"], spec["port"],
                                        reuse_address=True)
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(tmp, ready_file)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
