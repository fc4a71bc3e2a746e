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

from aliyun_iot import IotError, _stage, sleep_ms

_PUBLISH = const(0x30)
_SUBACK = const(0x90)
_SLICE_MS = const(1000)  # longest single wait, so the watchdog is fed
_DEAD = const(0x38)  # POLLERR | POLLHUP | POLLNVAL (a TLS socket that has failed)
_BUDGET = const(8)  # packets one serve() handles at most: what keeps arriving waits for the next call
_DEPTH = const(16)  # JSON nesting taken off the wire (str() and json.dumps recurse on the C stack)


class Link:
    """A connected (TLS) socket whose every read and write ends within ms; .client is the umqtt.simple
    MQTTClient that opened it (its writes come here). An MQTT packet over n bytes is refused before
    anything is allocated for it (HTTPS bounds its own reads). Registration and HTTPS use it too."""

    # (Argument and attribute names are qstrs, interned for good: the port's own where they can be.)

    def __init__(self, sock, ms, n, raw=None, client=None):
        self.sock = sock
        # MicroPython's TLS socket has no settimeout(): the socket under it carries the timeout.
        self.raw = sock if hasattr(sock, "settimeout") else raw
        self.ms = ms
        self.max = n  # the largest MQTT packet taken
        self.poll = select.poll()
        self.poll.register(sock, 1)
        self.client = client
        self.pid = 0  # the packet id of the last QoS 1 or 2 PUBLISH read
        self.last = ()  # the last QoS 1 packet ids handled (a DUP resend of one is not applied again)
        if client:
            client.sock = self

    def read(self, n, v=False, end=None):
        """n bytes by end (ticks; None: ms from now); with v, fewer at the end of the stream (a part;
        without, the end is IotError closed)."""
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        if end is None:
            end = time.ticks_add(time.ticks_ms(), self.ms)
        self.raw.settimeout(0)
        while got < n:
            try:
                k = self.sock.readinto(mv[got:])
            except OSError as e:
                from aliyun_iot.neterr import classify

                raise classify(e, "read")
            if k is None:  # nothing decrypted yet: wait for the rest, by end, a second at most, fed
                left = time.ticks_diff(end, time.ticks_ms())
                if left <= 0:
                    raise IotError("read timed out", "timeout", True)
                sleep_ms(0)
                ev = self.poll.poll(min(left, _SLICE_MS))
                if ev and ev[0][1] & _DEAD:
                    raise IotError("closed", "closed", True)
            elif k:
                got += k
            elif v:
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
        """The next packet, which has started to arrive, whole within ms of now (a trickle cannot hold
        it): (header byte, topic, payload) for a PUBLISH (acknowledged if QoS 1), else (header byte, body,
        None)."""
        end = time.ticks_add(time.ticks_ms(), self.ms)
        hdr = self.read(1, False, end)[0]
        n = shift = 0
        while True:
            b = self.read(1, False, end)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise IotError("malformed packet", "bad_reply", True)
        if n > self.max:
            raise IotError("packet over %d bytes" % self.max, "bad_reply", True)
        if hdr & 0xF0 != _PUBLISH:
            return hdr, self.read(n, False, end), None
        q = hdr & 0x06
        if q == 0x06:  # QoS 3 does not exist: a malformed packet (MQTT 3.1.1, 3.3.1-4)
            raise IotError("malformed packet", "bad_reply", True)
        # A PUBLISH: its topic and its payload read apart (two smaller blocks find room in a fragmented
        # heap where one would not).
        b = self.read(2, False, end) if n > 1 else b"\xff\xff"
        tl = b[0] << 8 | b[1]
        pos = 2 + tl + (2 if q else 0)
        if pos > n:
            raise IotError("malformed packet", "bad_reply", True)
        topic = bytes(self.read(tl, False, end))
        if q:
            b = self.read(2, False, end)
            self.pid = b[0] << 8 | b[1]
        b = self.read(n - pos, False, end)
        if q == 0x02:
            self.write(b"\x40\x02" + bytes((self.pid >> 8, self.pid & 255)))
        return hdr, topic, b

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

    def serve(self, s, end):
        # s.check() while connected: the packets that arrive by end (ticks), handed to s.subs; once one is
        # handled, only those already waiting, at most _BUDGET in all; a broken link is handed to s._lost().
        n = 0
        try:
            while s.link is self and n < _BUDGET:
                now = time.ticks_ms()
                sleep_ms(0)  # the watchdog
                left = min(0 if n else time.ticks_diff(end, now), _SLICE_MS)
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
                    if n or time.ticks_diff(end, time.ticks_ms()) <= 0:
                        break
                    continue
                hdr, a, b = self.recv()
                n += 1
                s.ping = None  # the server spoke: the link is alive, and has answered (rx not before next)
                s.rx = time.ticks_ms()
                if b is None:
                    if hdr == _SUBACK and len(a) > 2:
                        t = s.pend.pop(a[0] << 8 | a[1], None)
                        if a[2] & 0x80 and t is not None:  # reported; subscribed again at the next connection
                            s.event(IotError("subscription to %s refused" % t.decode(), "suback"))
                    continue
                q = hdr & 0x06
                if q == 0x04:  # QoS 2: never granted (every subscription is QoS 0); no PUBREC, not handled
                    s.event("qos")
                    continue
                if q:
                    if hdr & 0x08 and self.pid in self.last:  # a resend of one handled: acknowledged only
                        continue
                    self.last = self.last[-3:] + (self.pid,)
                fn = s.subs.get(a, 0)
                if fn is None:  # a post's reply
                    # Kept for the post waiting for its id; replies nobody waits for are dropped unparsed
                    # (nothing grows per message). A reply has two brackets: one with more than _DEPTH is
                    # refused unparsed (str() and json.dumps recurse on the C stack; json.loads allocates
                    # per level).
                    if s.want:
                        r = None
                        if b.count(b"[") + b.count(b"{") <= _DEPTH:
                            try:
                                r = json.loads(b)
                            except (ValueError, RuntimeError):  # not JSON; CPython: RecursionError
                                pass
                        i = r.get("id") if isinstance(r, dict) else None
                        if type(i) is int:
                            i = str(i)
                        if isinstance(i, str) and s.want.get(i, 0) is None:
                            s.want[i] = r
                        elif r is None:
                            s.event("id")
                    continue
                if fn is True:  # a property set: events.py, loaded for the call only
                    _stage("events", "property_set", (), s, a, b)
                elif fn:
                    try:
                        fn(a, b)
                    except MemoryError:
                        raise
                    except Exception as e:  # the application's bug must not end the session
                        s.event(e)
        except IotError as e:
            if e.code == "bad_reply":  # a packet over the bound or malformed: reported (events.py)
                s.event(e)
            s._lost(e)
        return n

    def post(self, s, params, wait):
        # s.post_property() while connected: one deadline, ms from the publish, for the whole wait.
        if wait and len(s.want) > 1:  # a post from a handler run while a post from a handler waits
            raise IotError("busy", "busy")
        s.n = s.n % 65535 + 1
        mid = str(s.n)
        # One format string (a short string constant would be a qstr, interned for good).
        s.publish(s.topic + b"event/property/post", '{"id":"%s","version":"1.0","params":%s,"method":'
                  '"thing.event.property.post"}' % (mid, json.dumps(params)))
        if not wait:
            return None
        end = time.ticks_add(time.ticks_ms(), self.ms)
        w = s.want  # id -> its reply (None until it comes); a post from a handler adds its own
        w[mid] = None
        try:
            while w[mid] is None:
                if s.link is not self:
                    raise IotError("link lost", "closed", True)
                if time.ticks_diff(end, time.ticks_ms()) <= 0:
                    # Is the link still there? The next check() sends a PINGREQ and finds out.
                    s.tx = time.ticks_add(time.ticks_ms(), -s.cfg["keepalive"] * 500)
                    raise IotError("no post reply", "timeout", True)
                self.serve(s, end)
            r = w[mid]
        finally:
            w.pop(mid, None)
        c = r.get("code")
        if c != 200:
            raise IotError("post refused: %s" % c, "post" + str(c), c == 429)
        return r
