# One open MQTT connection (made by aliyun_iot.dial): a deadline on every wait
# and a bound on every length read off the wire.
#
# MicroPython's TLS socket keeps the first error its socket gives it: a read
# that times out *through TLS* leaves it failed for good. So no read here
# waits in the socket: reads are non-blocking and wait in select.poll, which
# also sees bytes TLS has already decrypted and holds.
import select
import time

from micropython import const

from aliyun_iot.errors import BadReply, IotError, NetworkError, Timeout

_DEAD = const(0x38)  # POLLERR | POLLHUP | POLLNVAL (a TLS socket that has failed)


class Link:
    """A connected (TLS) socket whose every read and write ends within ms, and the MQTT session on it:
    .client is the umqtt.simple MQTTClient (whose socket this is). Reads over max_read are refused before
    anything is allocated for them."""

    generation = None  # the umqtt.simple API generation dial() found

    def __init__(self, sock, ms, max_read, raw=None, client=None):
        self.sock = sock
        # MicroPython's TLS socket has no settimeout(): the socket under it carries the timeout.
        self._t = sock if hasattr(sock, "settimeout") else raw
        self.ms = ms
        self.max_read = max_read
        self._p = select.poll()
        self._p.register(sock, 1)
        self.client = client
        if client:
            client.sock = self

    def setblocking(self, flag):
        pass  # umqtt's wait_msg() asks for blocking reads; ours always have a deadline

    def wait(self, ms):
        """True when a read would find data (or the end) within ms; a dead socket raises."""
        ev = self._p.poll(ms if ms > 0 else 0)
        if ev and ev[0][1] & _DEAD:
            raise NetworkError("connection closed", "closed")
        return bool(ev)

    def read(self, n):
        """n bytes, fewer only at the end of the stream."""
        if n > self.max_read:
            raise BadReply("peer announced %d bytes; at most %d are accepted" % (n, self.max_read))
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        t0 = time.ticks_ms()
        self._t.settimeout(0)
        while got < n:
            try:
                k = self.sock.readinto(mv[got:])
            except OSError as e:
                from aliyun_iot.neterr import classify

                raise classify(e, "read")
            if k is None:  # nothing decrypted yet: wait for the rest within the deadline
                left = self.ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    raise Timeout("read timed out after %d ms" % self.ms)
                self.wait(left)
            elif k:
                got += k
            else:
                return buf[:got]
        return buf

    def write(self, buf, n=None):
        if n is not None:
            buf = memoryview(buf)[:n]
        self._t.settimeout(self.ms / 1000)
        try:
            return self.sock.write(buf)
        except OSError as e:
            from aliyun_iot.neterr import classify

            raise classify(e, "write")

    def read_packet(self):
        """(header byte, body) of the next packet, which has started to arrive."""
        b = self.read(1)
        if not b:
            raise NetworkError("connection closed by the server", "closed")
        hdr = b[0]
        n = shift = 0
        while True:
            b = self.read(1)
            if not b:
                raise NetworkError("connection closed inside a packet", "closed")
            n |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                break
            shift += 7
            if shift > 21:
                raise BadReply("malformed packet length")
        body = self.read(n) if n else b""
        if len(body) != n:
            raise NetworkError("connection closed inside a packet", "closed")
        return hdr, body

    def parse_publish(self, hdr, body):
        """(topic, payload) of a PUBLISH; acknowledges QoS 1."""
        tl = (body[0] << 8 | body[1]) if len(body) > 1 else 1 << 16
        pos = 2 + tl
        if hdr & 0x06:
            if hdr & 0x06 == 0x02:
                self.write(b"\x40\x02" + body[pos : pos + 2])
            pos += 2
        if pos > len(body):
            raise BadReply("malformed PUBLISH")
        return bytes(body[2 : 2 + tl]), body[pos:]

    def subscribe(self, topic, pid):
        """Send SUBSCRIBE (QoS 0) without waiting: its SUBACK is read with the other packets."""
        if len(topic) > 122:
            raise ValueError("topic longer than 122 bytes")
        self.write(bytes((0x82, 5 + len(topic), pid >> 8, pid & 255, 0, len(topic))) + topic + b"\x00")

    def close(self, disconnect=True):
        """Send DISCONNECT (if asked) and close; errors on the way out are not news."""
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
