"""A loopback TCP proxy that misbehaves on purpose, placed below TLS.

Faults (all optional, combinable):
  --delay-ms MS     one-way delay added in each direction (round trip grows by 2*MS)
  --chunk N         forward at most N bytes per write, 1 ms apart (1: byte by byte)
  --stall PHASE     stop forwarding, keeping the connection open:
                      tcp      nothing ever flows (the TLS handshake never starts)
                      tls      after the server's first handshake record
                      connack  before the server's first application-data record (TLS 1.2: the CONNACK)
                      reply    before the server's second application-data record (the registration reply)
  --cut-after N     close both sides once N bytes (both directions together) have been forwarded
  --reset-after N   the same, but with a TCP reset instead of a close
  --faulty K        apply the faults to the first K connections only (0: to all); later ones pass cleanly

Phases are read off TLS record headers, which stay in clear text; they assume TLS 1.2, which is what
mbedTLS on MicroPython negotiates.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import threading
import time

_STALLS = ("tcp", "tls", "connack", "reply")


class Faults:
    def __init__(self, delay_ms=0, chunk=0, stall=None, cut_after=0, reset_after=0, faulty=0):
        if stall is not None and stall not in _STALLS:
            raise ValueError("stall must be one of %s" % ", ".join(_STALLS))
        self.delay_ms = delay_ms
        self.chunk = chunk
        self.stall = stall
        self.cut_after = cut_after
        self.reset_after = reset_after
        self.faulty = faulty


class _Conn:
    """One proxied connection: two pumps sharing a byte budget and a stall switch."""

    def __init__(self, proxy, faults):
        self.proxy = proxy
        self.f = faults
        self.forwarded = 0
        self.closed = asyncio.Event()
        self.app_records = 0
        self.stalled = False
        self.dead = proxy.dark  # an outage: bytes vanish both ways, no close, no reset

    def _budget(self):
        return self.f.cut_after or self.f.reset_after

    async def pump(self, reader, writer, from_server, peers):
        queue: asyncio.Queue = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer, peers))
        pending = b""
        try:
            while not self.closed.is_set():
                data = await reader.read(4096)
                if not data:
                    break
                if self.dead:
                    continue
                if from_server and self.f.stall in ("tls", "connack", "reply"):
                    pending += data
                    data, pending = self._until_stall(pending)
                if data:
                    await queue.put((time.monotonic() + self.f.delay_ms / 1000, data))
        finally:
            await queue.put(None)
            await sender

    def _until_stall(self, buf):
        # Walk whole TLS records; hold back everything from the record the stall is due at.
        if self.stalled:
            return b"", buf
        pos = 0
        while len(buf) - pos >= 5:
            rtype = buf[pos]
            (length,) = struct.unpack("!H", buf[pos + 3 : pos + 5])
            if rtype == 0x17:
                self.app_records += 1
            due = (self.f.stall == "connack" and rtype == 0x17 and self.app_records == 1) or (
                self.f.stall == "reply" and rtype == 0x17 and self.app_records == 2
            )
            if due:
                self.stalled = True
                return buf[:pos], buf[pos:]
            if len(buf) - pos < 5 + length:
                break
            pos += 5 + length
            if self.f.stall == "tls" and rtype == 0x16:
                self.stalled = True
                return buf[:pos], buf[pos:]
        return buf[:pos], buf[pos:]

    async def _send(self, queue, writer, peers):
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            step = self.f.chunk or len(data)
            for i in range(0, len(data), step):
                piece = data[i : i + step]
                budget = self._budget()
                if budget and self.forwarded + len(piece) >= budget:
                    piece = piece[: budget - self.forwarded]
                    if piece:
                        writer.write(piece)
                        await writer.drain()
                    self.forwarded = budget
                    self._end(peers, reset=bool(self.f.reset_after))
                    return
                writer.write(piece)
                await writer.drain()
                self.forwarded += len(piece)
                self.proxy.bytes_forwarded += len(piece)
                if self.f.chunk:
                    await asyncio.sleep(0.001)
        self._end(peers, reset=False)

    def _end(self, peers, reset):
        if self.closed.is_set():
            return
        self.closed.set()
        for w in peers:
            if reset:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.close()


class FaultProxy:
    """The proxy on a background thread: `with FaultProxy(("127.0.0.1", 8883), delay_ms=10) as p: p.port`."""

    def __init__(self, target, host="127.0.0.1", port=0, **faults):
        self.target = target
        self.host = host
        self.port = port
        self.faults = Faults(**faults)
        self.connections = 0
        self.bytes_forwarded = 0
        self.conn_bytes = []  # bytes forwarded by each finished connection, in order of closing
        self._loop = None
        self._server = None
        self._thread = None
        self._ready = threading.Event()
        self._stop = None
        self._writers = set()
        self._conns = set()
        self.dark = False

    def set(self, **faults):
        """Replace the faults for connections opened from now on."""
        self.faults = Faults(**faults)

    def outage(self, on):
        """A network outage (on=True): from now on no byte crosses, on the open connections or on any
        opened during it; they stay open, half-open as after a lost route. Those connections stay dead
        when it ends (off); connections opened afterwards are clean."""
        self.dark = on
        if on:
            for conn in list(self._conns):
                conn.dead = True

    async def _handle(self, c_reader, c_writer):
        try:
            await self._proxy(c_reader, c_writer)
        except asyncio.CancelledError:
            pass  # shutting down: end quietly rather than as a cancelled task asyncio would log

    async def _proxy(self, c_reader, c_writer):
        self.connections += 1
        f = self.faults
        if f.faulty and self.connections > f.faulty:
            f = Faults(delay_ms=f.delay_ms)  # a clean connection, but the network is still as slow
        conn = _Conn(self, f)
        self._conns.add(conn)
        self._writers.add(c_writer)
        if f.stall == "tcp":
            await conn.closed.wait()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.close()
            return
        self._writers.add(s_writer)
        for w in (c_writer, s_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peers = (c_writer, s_writer)
        await asyncio.gather(
            conn.pump(c_reader, s_writer, False, peers),
            conn.pump(s_reader, c_writer, True, peers),
            return_exceptions=True,
        )
        conn._end(peers, reset=False)
        self._conns.discard(conn)
        self.conn_bytes.append(conn.forwarded)

    async def _main(self):
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        # Shut down inside the loop: close every connection, then let the pumps finish.
        self._server.close()
        for w in list(self._writers):
            w.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def start(self):
        def run():
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self._main())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self):
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _hostport(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % s)
    return host, int(port)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.faultproxy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0), help="HOST:PORT to listen on")
    p.add_argument("--target", type=_hostport, required=True, help="HOST:PORT to forward to")
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--chunk", type=int, default=0)
    p.add_argument("--stall", choices=_STALLS)
    p.add_argument("--cut-after", type=int, default=0)
    p.add_argument("--reset-after", type=int, default=0)
    p.add_argument("--faulty", type=int, default=0)
    a = p.parse_args(argv)
    proxy = FaultProxy(
        a.target,
        a.listen[0],
        a.listen[1],
        delay_ms=a.delay_ms,
        chunk=a.chunk,
        stall=a.stall,
        cut_after=a.cut_after,
        reset_after=a.reset_after,
        faulty=a.faulty,
    )
    try:
        proxy.start()
    except OSError as e:
        print("faultproxy: cannot listen on %s:%d: %s" % (a.listen[0], a.listen[1], e), file=sys.stderr)
        return 1
    print("faultproxy listening on %s:%d -> %s:%d" % (a.listen[0], proxy.port, *a.target), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
