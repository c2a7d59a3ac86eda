#!/usr/bin/python3
"""Scripted fault servers for the appguard test environment.

Only for faults that no real server (nginx, knotd) produces.  One process
serves every listener of its spec, so a single latency proxy can sit in
front of a thousand hosts.

Usage: faultd.py SPEC.json READY_FILE

SPEC.json is {"servers": [{"kind": KIND, "host": ADDR, "port": PORT, ...}]}.
Kinds and their extra keys:
  stall              accept, read and discard, never send
  garbage            send non-TLS bytes; "size" (bytes), "close" (bool)
  close_after_hello  read one TLS record (the ClientHello), then close
  reset              read the first bytes, then close with RST (SO_LINGER 0)
  slow               send "rate" bytes per second (default 1): the bytes of
                     "upstream" ("addr:port") if given, else an endless TLS
                     record
  delay              wait "ms", then relay both ways to "upstream"
  silent_dns         UDP and TCP on the same address; read, never answer
READY_FILE is created once every listener is bound.
"""

import asyncio
import json
import os
import socket
import struct
import sys

CHUNK = 65536


async def drain_until_eof(reader):
    """Read and discard until the peer closes; tolerate resets."""
    try:
        while await reader.read(CHUNK):
            pass
    except ConnectionError:
        pass


def close(writer):
    try:
        writer.close()
    except ConnectionError:
        pass


async def stall(reader, writer, spec):
    await drain_until_eof(reader)
    close(writer)


async def garbage(reader, writer, spec):
    # 0x00 is no TLS content type (those are 20..24), so the bytes can
    # never be taken for a TLS record, whatever follows.  The next byte is
    # where a record has its major version: never 0x03, so that every
    # client fails the same way ("wrong version number") whatever the
    # random bytes are (with 0x03 there, 1 in 256 connections, OpenSSL
    # reads on and fails on the length: "packet length too long").
    data = bytearray(os.urandom(spec.get("size", 64)))
    data[0] = 0x00
    if len(data) > 1 and data[1] == 0x03:
        data[1] = 0x00
    writer.write(bytes(data))
    try:
        await writer.drain()
    except ConnectionError:
        pass
    if not spec.get("close", True):
        await drain_until_eof(reader)
    close(writer)


async def close_after_hello(reader, writer, spec):
    try:
        header = await reader.readexactly(5)
        (length,) = struct.unpack("!H", header[3:5])
        await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    close(writer)


async def reset(reader, writer, spec):
    try:
        await reader.read(CHUNK)
    except ConnectionError:
        pass
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def pace(rate):
    """(bytes, seconds): send that many bytes per tick to keep to rate
    bytes per second; ticks of at least 10 ms, so high rates stay exact."""
    tick = max(1.0 / rate, 0.01)
    return max(1, int(rate * tick)), tick


class EndlessRecord:
    """A TLS handshake record header announcing 16 KiB, then zeros."""

    def __init__(self):
        self.data = b"\x16\x03\x03\x40\x00"

    async def read(self, size):
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk + b"\x00" * (size - len(chunk))


async def pump(reader, writer, rate=None):
    """Copy reader to writer, at rate bytes per second if given."""
    size, tick = pace(rate) if rate else (CHUNK, 0)
    try:
        while data := await reader.read(size):
            writer.write(data)
            await writer.drain()
            if tick:
                await asyncio.sleep(tick)
    except ConnectionError:
        pass


async def relay(client, upstream, down_rate=None):
    """Relay both ways until either side closes, then close both."""
    (c_reader, c_writer), (u_reader, u_writer) = client, upstream
    tasks = [
        asyncio.ensure_future(pump(c_reader, u_writer)),
        asyncio.ensure_future(pump(u_reader, c_writer, down_rate)),
    ]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    close(c_writer)
    close(u_writer)


async def proxy(reader, writer, spec, down_rate=None):
    """Relay to spec["upstream"] ("addr:port"); close if it is down."""
    host, port = spec["upstream"].rsplit(":", 1)
    try:
        upstream = await asyncio.open_connection(host.strip("[]"), int(port))
    except OSError:
        close(writer)
        return
    await relay((reader, writer), upstream, down_rate)


async def slow(reader, writer, spec):
    rate = spec.get("rate", 1)
    if "upstream" in spec:
        await proxy(reader, writer, spec, rate)
    else:
        # the client's bytes are dropped; when it closes, stop sending
        await relay((reader, writer), (EndlessRecord(), DevNull()), rate)


async def delay(reader, writer, spec):
    await asyncio.sleep(spec["ms"] / 1000.0)
    await proxy(reader, writer, spec)


class DevNull:
    """A writer that drops everything."""

    def write(self, data):
        pass

    async def drain(self):
        pass

    def close(self):
        pass


class SilentUDP(asyncio.DatagramProtocol):
    def datagram_received(self, data, addr):
        pass


TCP_KINDS = {
    "stall": stall,
    "garbage": garbage,
    "close_after_hello": close_after_hello,
    "reset": reset,
    "slow": slow,
    "delay": delay,
    "silent_dns": stall,
}


async def listen(spec):
    handler = TCP_KINDS[spec["kind"]]

    async def on_connect(reader, writer):
        await handler(reader, writer, spec)

    server = await asyncio.start_server(
        on_connect, spec["host"], spec["port"], reuse_address=True, backlog=1024
    )
    if spec["kind"] == "silent_dns":
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            SilentUDP, local_addr=(spec["host"], spec["port"])
        )
    return server


async def main(spec_file, ready_file):
    with open(spec_file) as f:
        specs = json.load(f)["servers"]
    servers = [await listen(spec) for spec in specs]
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(tmp, ready_file)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
