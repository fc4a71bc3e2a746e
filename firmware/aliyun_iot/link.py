# One open connection (made by aliyun_iot.dial, or by https.py): a deadline
# on every wait and a bound on every length read off the wire; the MQTT
# packets a session and a registration read.
#
# MicroPython's TLS socket keeps the first error its socket gives it: a read
# that times out *through TLS* leaves it failed for good. So no read here
# waits in the socket: reads are non-blocking and wait in select.poll, which
# also sees bytes TLS has already decrypted and holds.
import select
import time

from micropython import const

from aliyun_iot import IotError

_PUBLISH = const(0x30)
_DEAD = const(0x38)  # POLLERR | POLLHUP | POLLNVAL (a TLS socket that has failed)


class Link:
    """A connected (TLS) socket whose every read and write ends within ms; .client is the umqtt.simple
    MQTTClient that opened it (its writes come here). Reads over max_read are refused before anything is
    allocated for them. Registration and HTTPS use it too."""

    def __init__(self, sock, ms, max_read, raw=None, client=None):
        self.sock = sock
        # MicroPython's TLS socket has no settimeout(): the socket under it carries the timeout.
        self.raw = sock if hasattr(sock, "settimeout") else raw
        self.ms = ms
        self.max_read = max_read
        self.poll = select.poll()
        self.poll.register(sock, 1)
        self.client = client
        if client:
            client.sock = self

    def wait(self, ms):
        """True when a read would find data (or the end) within ms; a dead socket raises."""
        ev = self.poll.poll(ms if ms > 0 else 0)
        if ev and ev[0][1] & _DEAD:
            raise IotError("closed", "closed", True)
        return bool(ev)

    def read(self, n):
        """n bytes, fewer only at the end of the stream."""
        if n > self.max_read:
            raise IotError("packet over %d bytes" % self.max_read, "bad_reply", True)
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        t0 = time.ticks_ms()
        self.raw.settimeout(0)
        while got < n:
            try:
                k = self.sock.readinto(mv[got:])
            except OSError as e:
                from aliyun_iot.neterr import classify

                raise classify(e, "read")
            if k is None:  # nothing decrypted yet: wait for the rest within the deadline
                left = self.ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    raise IotError("read timed out", "timeout", True)
                self.wait(left)
            elif k:
                got += k
            else:
                return buf[:got]
        return buf

    def write(self, buf, n=None):
        if n is not None:
            buf = memoryview(buf)[:n]
        self.raw.settimeout(self.ms / 1000)
        try:
            return self.sock.write(buf)
        except OSError as e:
            from aliyun_iot.neterr import classify

            raise classify(e, "write")

    def recv(self):
        """The next packet, which has started to arrive: (header byte, topic, payload) for a PUBLISH
        (acknowledged if QoS 1), else (header byte, body, None)."""
        b = self.read(1)
        hdr = b[0] if b else 0
        n = shift = 0
        while b:
            b = self.read(1)
            if b:
                n |= (b[0] & 0x7F) << shift
                if not b[0] & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise IotError("malformed packet", "bad_reply", True)
        body = self.read(n) if b and n else b""
        if not b or len(body) != n:
            raise IotError("closed", "closed", True)
        if hdr & 0xF0 != _PUBLISH:
            return hdr, body, None
        tl = (body[0] << 8 | body[1]) if n > 1 else 1 << 16
        pos = 2 + tl
        if hdr & 0x06:
            if hdr & 0x06 == 0x02:
                self.write(b"\x40\x02" + body[pos : pos + 2])
            pos += 2
        if pos > n:
            raise IotError("malformed packet", "bad_reply", True)
        return hdr, bytes(body[2 : 2 + tl]), body[pos:]

    def close(self, disconnect=True):
        """Send DISCONNECT (if asked and MQTT) and close; errors on the way out are not news."""
        if self.sock is None:
            return
        if disconnect and self.client:
            try:
                self.write(b"\xe0\x00")
            except IotError:
                pass  # the link is being dropped anyway
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None
