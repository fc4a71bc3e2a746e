# One open connection (made by aliyun_iot.dial, or by https.py): a deadline
# on every wait and a bound on every length read off the wire; the MQTT
# packets a session and a registration read; and what a session does only
# while connected (serving packets, keepalive, a post and its reply), so that
# none of it is in RAM while a reconnection's TLS handshake needs the most.
#
# MicroPython's TLS socket keeps the first error its socket gives it: a read
# that times out *through TLS* leaves it failed for good. So no read here
# waits in the socket: reads are non-blocking and wait in select.poll, which
# also sees bytes TLS has already decrypted and holds.
import json
import select
import time

from micropython import const

from aliyun_iot import IotError, forget, sleep_ms

_PUBLISH = const(0x30)
_SUBACK = const(0x90)
_SLICE_MS = const(1000)  # longest single wait, so the watchdog is fed
_DEAD = const(0x38)  # POLLERR | POLLHUP | POLLNVAL (a TLS socket that has failed)


class Link:
    """A connected (TLS) socket whose every read and write ends within ms; .client is the umqtt.simple
    MQTTClient that opened it (its writes come here). An MQTT packet over max_read bytes is refused before
    anything is allocated for it (HTTPS bounds its own reads). Registration and HTTPS use it too."""

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

    def read(self, n, part=False):
        """n bytes; with part, fewer at the end of the stream (without, the end is IotError closed)."""
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
                ev = self.poll.poll(left)
                if ev and ev[0][1] & _DEAD:
                    raise IotError("closed", "closed", True)
            elif k:
                got += k
            elif part:
                return buf[:got]
            else:
                raise IotError("closed", "closed", True)
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
        hdr = self.read(1)[0]
        n = shift = 0
        while True:
            b = self.read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise IotError("malformed packet", "bad_reply", True)
        if n > self.max_read:
            raise IotError("packet over %d bytes" % self.max_read, "bad_reply", True)
        if hdr & 0xF0 != _PUBLISH:
            return hdr, self.read(n), None
        # A PUBLISH: its topic and its payload read apart (two smaller blocks find room in a fragmented
        # heap where one would not).
        b = self.read(2) if n > 1 else b"\xff\xff"
        tl = b[0] << 8 | b[1]
        pos = 2 + tl + (2 if hdr & 0x06 else 0)
        if pos > n:
            raise IotError("malformed packet", "bad_reply", True)
        topic = bytes(self.read(tl))
        if hdr & 0x06:
            b = self.read(2)
            if hdr & 0x06 == 0x02:
                self.write(b"\x40\x02" + b)
        return hdr, topic, self.read(n - pos)

    def close(self):
        """Send DISCONNECT (MQTT) and close; errors on the way out are not news."""
        if self.sock is None:
            return
        if self.client:
            try:
                self.write(b"\xe0\x00")
            except IotError:
                pass  # the link is being dropped anyway
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None

    # ---- a session's connection (s: the aliyun_iot.session.Session whose link this is)

    def sub(self, s, t):
        # SUBSCRIBE (QoS 0) without waiting: its SUBACK is read with the other packets.
        s.n = s.n % 65535 + 1
        s.pend[s.n] = t
        self.write(bytes((0x82, 5 + len(t), s.n >> 8, s.n & 255, 0, len(t))) + t + b"\x00")

    def serve(self, s, wait_ms, t0):
        # s.check() while connected: the packets that arrive within wait_ms of t0, handed to s.subs; a
        # broken link is handed to s._lost().
        n = 0
        try:
            while s.link is self:
                now = time.ticks_ms()
                sleep_ms(0)  # the watchdog
                left = min(0 if n else wait_ms - time.ticks_diff(now, t0), _SLICE_MS)
                # Keepalive: PINGREQ after half the keepalive without a packet either way; its PINGRESP
                # within the timeout, or the link is dead (a half-open link is otherwise found late).
                if s.ping is not None:
                    over = time.ticks_diff(now, s.ping) - self.ms
                    if over >= 0:
                        raise IotError("no PINGRESP", "ping", True)
                    left = min(left, -over)
                else:
                    idle = s.cfg["keepalive"] * 500 - max(time.ticks_diff(now, s.tx),
                                                          time.ticks_diff(now, s.rx))
                    if idle <= 0:
                        self.write(b"\xc0\x00")
                        s.tx = s.ping = now
                        idle = self.ms
                    left = min(left, idle)
                ev = self.poll.poll(left if left > 0 else 0)
                if ev and ev[0][1] & _DEAD:  # a TLS socket that has failed
                    raise IotError("closed", "closed", True)
                if not ev:
                    if n or time.ticks_diff(time.ticks_ms(), t0) >= wait_ms:
                        break
                    continue
                hdr, a, b = self.recv()
                n += 1
                s.ping = None  # the server spoke: the link is alive
                s.rx = time.ticks_ms()
                if b is not None:
                    fn = s.subs.get(a, 0)
                    if fn is None:  # a post's reply
                        try:
                            r = json.loads(b)
                        except ValueError:
                            continue
                        if isinstance(r, dict) and isinstance(s.want, str) and str(r.get("id")) == s.want:
                            s.want = r  # replies nobody waits for are dropped: nothing grows per message
                    elif fn is True:  # a property set
                        self.event(s, a, b)
                    elif fn:
                        try:
                            fn(a, b)
                        except MemoryError:
                            raise
                        except Exception as e:  # the application's bug must not end the session
                            self.event(s, None, e)
                elif hdr == _SUBACK and len(a) > 2:
                    t = s.pend.pop(a[0] << 8 | a[1], None)
                    if a[2] & 0x80 and t is not None:
                        s.subs.pop(t, None)  # not sent again on every reconnect
                        self.event(s, None, IotError("subscription to %s refused" % t.decode(), "suback"))
        except IotError as e:
            s._lost(e)
        return n

    def event(self, s, topic, e):
        # The rare paths live in events.py, loaded for the call only: a property set (on topic, payload e),
        # or a report of the application's failure e (topic None).
        from aliyun_iot import events

        try:
            if topic is None:
                events.report(s, e)
            else:
                events.property_set(s, topic, e)
        finally:
            forget("events")

    def post(self, s, params, wait):
        # s.post_property() while connected.
        s.n = s.n % 65535 + 1
        mid = str(s.n)
        s.publish(s.topic + b"event/property/post", json.dumps({"id": mid, "version": "1.0", "params": params,
                                                                "method": "thing.event.property.post"}))
        if not wait:
            return None
        t0 = time.ticks_ms()
        s.want = mid
        try:
            while not isinstance(s.want, dict):
                if s.link is None:
                    raise IotError("link lost", "closed", True)
                left = self.ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    # Is the link still there? The next check() sends a PINGREQ and finds out.
                    s.tx = time.ticks_add(time.ticks_ms(), -s.cfg["keepalive"] * 500)
                    raise IotError("no post reply", "timeout", True)
                self.serve(s, left, time.ticks_ms())
            r = s.want
        finally:
            s.want = None
        c = r.get("code")
        if c != 200:
            raise IotError("post refused: %s" % c, "post%s" % c, c == 429)
        return r
