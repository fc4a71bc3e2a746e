# The authenticated session that runs for months. check() serves the link
# (packets, keepalive, the PINGRESP deadline) and, when the link is down,
# reconnects by itself on the schedule of the policy table (README: "Life
# after online"). Link trouble never reaches the application; its own
# failures (a refused post, a refused subscription) do, and never end the
# session.
import json
import time

from micropython import const

from aliyun_iot import IotError, backoff_ms, feed, forget, log, sleep_ms

_SUBACK = const(0x90)
_SLICE_MS = const(1000)  # longest single wait, so the watchdog is fed
class Session:
    """The device's MQTT session. Call check() from the application's loop, at least every second."""

    def __init__(self, cfg, cred):
        from aliyun_iot import creds

        self.login = creds.login_for(cred, cfg)  # computed once: the signing code is dropped
        forget("creds")
        # What a reconnection needs of config.json (no Wi-Fi password, no ProductSecret); ctx: the TLS
        # context, built once (by the boot, or by the first connection).
        self.cfg = {k: cfg.get(k) for k in ("host", "port", "tls", "ca", "ctx", "timeout", "keepalive",
                                             "backoff_ms", "retry_cap_s", "refused_cap_s")}
        self.led = None  # a machine.Pin (set by the boot flow): on while offline
        self.on_error = None  # fn(exc): the application's failures reported from check()
        self.topic = ("/sys/%s/%s/thing/" % (cred["pk"], cred["dn"])).encode()
        self.subs = {self.topic + b"event/property/post_reply": self._reply}  # topic -> fn(topic, payload)
        self.pend = {}  # packet id -> topic, until its SUBACK
        self.on_set = None
        self.link = None
        self.connects = self.fails = self.n = self.up = 0
        self.next = self.tx = self.rx = self.t = time.ticks_ms()
        self.ping = None  # when an unanswered PINGREQ went out
        self.want = None  # the post id awaited (a str), then its reply (a dict)

    @property
    def online(self):
        return self.link is not None

    def uptime_s(self):
        """Seconds since the session was made; survives the ticks wrap (12.4 days on an ESP32)."""
        self.check(-1)
        return self.up // 1000

    # ---- connection

    def connect(self):
        """Open the connection with the stored credential and (re)subscribe. Raises IotError."""
        from aliyun_iot import dial

        try:
            dial.open_link(self)
        finally:
            forget("dial", "link", "neterr")  # connection-time code; an open link keeps what it uses

    def close(self):
        if self.link is not None:
            self.link.close()
            self.link = None

    def _lost(self, e):
        log("link lost (%s): reconnecting" % e.code)
        self.close()
        forget("neterr")  # imported to name the failure; not held while online
        if self.led:
            self.led.value(1)
        self.fails = 0
        self.next = time.ticks_add(time.ticks_ms(), backoff_ms(0, self.cfg["backoff_ms"]))

    # ---- serving the link

    def check(self, wait_ms=0):
        """Handle what arrives within wait_ms (0: only what is here). Returns the packets handled.

        A broken link is closed and reconnected on the policy's schedule, never raised."""
        t0 = time.ticks_ms()
        self.up += time.ticks_diff(t0, self.t)  # a sum of steps: the ticks wrap does not matter
        self.t = t0
        feed()
        if wait_ms < 0:  # uptime_s(): the clock only
            return 0
        if self.link is None:
            d = time.ticks_diff(self.next, t0)
            if d > 0:
                sleep_ms(min(d, wait_ms))
            if d <= wait_ms:
                from aliyun_iot import dial

                try:
                    dial.retry(self)
                finally:
                    forget("dial", "link", "neterr")  # connection-time code; an open link keeps what it uses
            return 0
        n = 0
        ms = self.cfg["timeout"] * 1000
        try:
            while self.link is not None:
                now = time.ticks_ms()
                feed()
                left = min(0 if n else wait_ms - time.ticks_diff(now, t0), _SLICE_MS)
                # Keepalive: PINGREQ after half the keepalive without a packet either way; its PINGRESP
                # within the timeout, or the link is dead (a half-open link is otherwise found late).
                if self.ping is not None:
                    over = time.ticks_diff(now, self.ping) - ms
                    if over >= 0:
                        raise IotError("no PINGRESP", "ping", True)
                    left = min(left, -over)
                else:
                    idle = self.cfg["keepalive"] * 500 - max(time.ticks_diff(now, self.tx),
                                                             time.ticks_diff(now, self.rx))
                    if idle <= 0:
                        self.link.write(b"\xc0\x00")
                        self.tx = self.ping = now
                        idle = ms
                    left = min(left, idle)
                if not self.link.wait(left):
                    if n or time.ticks_diff(time.ticks_ms(), t0) >= wait_ms:
                        break
                    continue
                hdr, a, b = self.link.recv()
                n += 1
                self.ping = None  # the server spoke: the link is alive
                self.rx = time.ticks_ms()
                if b is not None:
                    fn = self.subs.get(a)
                    if fn is not None:
                        try:
                            fn(a, b)
                        except MemoryError:
                            raise
                        except Exception as e:  # the application's bug must not end the session
                            self._event(None, e)
                elif hdr == _SUBACK and len(a) > 2:
                    t = self.pend.pop(a[0] << 8 | a[1], None)
                    if a[2] & 0x80 and t is not None:
                        self.subs.pop(t, None)  # not sent again on every reconnect
                        self._event(None, IotError("subscription to %s refused" % t.decode(), "suback"))
        except IotError as e:
            self._lost(e)
        return n

    def _event(self, topic, e):
        # The rare paths live in events.py, loaded for the call only: a property set (on topic, payload e),
        # or a report of the application's failure e (topic None).
        from aliyun_iot import events

        try:
            if topic is None:
                events.report(self, e)
            else:
                events.property_set(self, topic, e)
        finally:
            forget("events")

    # ---- the application's side

    def publish(self, topic, msg):
        """Publish at QoS 0. Raises IotError (code offline) when offline; the session reconnects by itself."""
        if self.link is None:
            raise IotError("offline", "offline", True)
        try:
            self.link.client.publish(topic, msg)
        except IotError as e:
            self._lost(e)
            raise
        self.tx = time.ticks_ms()

    def _sub(self, t):
        # SUBSCRIBE (QoS 0) without waiting: its SUBACK is read with the other packets.
        if len(t) > 122:
            raise ValueError("topic longer than 122 bytes")
        self.n = self.n % 65535 + 1
        self.pend[self.n] = t
        self.link.write(bytes((0x82, 5 + len(t), self.n >> 8, self.n & 255, 0, len(t))) + t + b"\x00")

    def subscribe(self, topic, cb):
        """Call cb(topic, payload) (both bytes) for every message on topic, also after a reconnect.
        A refusal is reported (on_error, or the log) and the topic dropped."""
        t = topic.encode() if isinstance(topic, str) else topic
        self.subs[t] = cb
        if self.link is not None:
            try:
                self._sub(t)
            except IotError as e:
                self._lost(e)

    def on_property_set(self, fn):
        """fn(params) handles a property set from the cloud and returns the reply code (None: 200)."""
        self.on_set = fn
        self.subscribe(self.topic + b"service/property/set", self._event)

    def _reply(self, topic, payload):
        try:
            r = json.loads(payload)
        except ValueError:
            return
        if isinstance(r, dict) and isinstance(self.want, str) and str(r.get("id")) == self.want:
            self.want = r  # replies nobody waits for are dropped: nothing grows per message

    def post_property(self, params, wait=True):
        """Post properties; with wait, return the platform's reply once it arrives.

        Raises IotError: "post<code>" when the platform refuses it, timeout, offline."""
        self.n = self.n % 65535 + 1
        mid = str(self.n)
        body = {"id": mid, "version": "1.0", "params": params, "method": "thing.event.property.post"}
        self.publish(self.topic + b"event/property/post", json.dumps(body))
        if not wait:
            return None
        limit = self.cfg["timeout"] * 1000
        t0 = time.ticks_ms()
        self.want = mid
        try:
            while not isinstance(self.want, dict):
                if self.link is None:
                    raise IotError("link lost", "closed", True)
                left = limit - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    # Is the link still there? The next check() sends a PINGREQ and finds out.
                    self.tx = time.ticks_add(time.ticks_ms(), -self.cfg["keepalive"] * 500)
                    raise IotError("no post reply", "timeout", True)
                self.check(left)
            r = self.want
        finally:
            self.want = None
        c = r.get("code")
        if c != 200:
            raise IotError("post refused: %s" % c, "post%s" % c, c == 429)
        return r
