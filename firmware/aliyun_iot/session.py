# The authenticated session that runs for months. check() serves the link
# (packets, keepalive, the PINGRESP deadline) and, when the link is down,
# reconnects by itself on the schedule of the policy table (README: "Life
# after online"). Link trouble never reaches the application; its own
# failures (a refused post, a refused subscription) do, and never end the session.
import json
import time

from micropython import const

from aliyun_iot import forget, log, wdt
from aliyun_iot.errors import IotError, NetworkError, Timeout

_PUBLISH = const(0x30)
_SUBACK = const(0x90)
_SLICE_MS = const(1000)  # longest single wait, so the watchdog is fed


class Session:
    """The device's MQTT session. Call check() from the application's loop, at least every second."""

    def __init__(self, cfg, cred, log=log):
        from aliyun_iot import creds

        self.cfg = cfg
        self.cred = cred
        self._login = creds.login_for(cred, cfg)  # computed once: the signing code is dropped
        forget("creds", "sign")
        self.log = log
        self.led = None  # a machine.Pin (set by the boot flow): on while offline
        self.on_error = None  # fn(exc): the application's failures reported from check()
        b = "/sys/%s/%s/thing/" % (cred["pk"], cred["dn"])
        self._post_t = (b + "event/property/post").encode()
        self._set_t = (b + "service/property/set").encode()
        self._subs = {self._post_t + b"_reply": self._on_reply}  # topic -> fn(topic, payload)
        self._pend = {}  # packet id -> topic, until its SUBACK
        self._on_set = None
        self.link = None
        self.connects = 0
        self._id = self._pid = 0
        self._fails = 0
        self._next = self._tx = self._rx = self._t = time.ticks_ms()
        self._ping = None  # when an unanswered PINGREQ went out
        self._want = self._got = None  # the post id awaited, its reply
        self._up = 0

    @property
    def online(self):
        return self.link is not None

    def uptime_s(self):
        """Seconds since the session was made; survives the ticks wrap (12.4 days on an ESP32)."""
        self._clock()
        return self._up // 1000

    def _clock(self):
        now = time.ticks_ms()
        self._up += time.ticks_diff(now, self._t)
        self._t = now
        wdt.feed()
        return now

    # ---- connection

    def connect(self):
        """Open the connection with the stored credential and (re)subscribe. Raises IotError."""
        from aliyun_iot import dial

        try:
            dial.open_session(self)
        finally:
            forget("dial")  # connection-time code: not held by the running session

    def close(self):
        if self.link is not None:
            self.link.close()
            self.link = None

    def _lost(self, e):
        self.log("link lost (%s): reconnecting" % e.code)
        self.close()
        forget("neterr")  # imported to name the failure; not held while online
        if self.led:
            self.led.value(1)
        self._fails = 0
        self._next = time.ticks_add(time.ticks_ms(), wdt.backoff_ms(0, self.cfg["backoff_ms"]))

    # ---- serving the link

    def check(self, wait_ms=0):
        """Handle what arrives within wait_ms (0: only what is here). Returns the packets handled.

        A broken link is closed and reconnected on the policy's schedule, never raised."""
        d = time.ticks_diff(self._next, self._clock())
        if self.link is None:
            if d > 0:
                wdt.sleep_ms(min(d, wait_ms))
            if d <= wait_ms:
                from aliyun_iot import dial

                try:
                    dial.retry(self)
                finally:
                    forget("dial", "neterr")  # connection-time code: not held while online
            return 0
        try:
            return self._serve(wait_ms)
        except IotError as e:
            self._lost(e)
            return 0

    def _serve(self, wait_ms):
        t0 = time.ticks_ms()
        n = 0
        while self.link is not None:
            left = 0 if n else wait_ms - time.ticks_diff(self._clock(), t0)
            left = self._keepalive(min(left, _SLICE_MS))
            if not self.link.wait(left):
                if n or time.ticks_diff(time.ticks_ms(), t0) >= wait_ms:
                    break
                continue
            hdr, body = self.link.read_packet()
            n += 1
            self._ping = None  # the server spoke: the link is alive
            self._rx = time.ticks_ms()
            if hdr & 0xF0 == _PUBLISH:
                self._dispatch(*self.link.parse_publish(hdr, body))
            elif hdr == _SUBACK and len(body) > 2:
                t = self._pend.pop(body[0] << 8 | body[1], None)
                if body[2] & 0x80 and t is not None:
                    self._subs.pop(t, None)  # not sent again on every reconnect
                    self._report(IotError("subscription to %s refused" % t.decode(), "suback"))
        return n

    def _keepalive(self, left):
        # PINGREQ after half the keepalive without a packet either way; its PINGRESP within the timeout,
        # or the link is dead (a half-open link is otherwise noticed only by the next unanswered post).
        now = time.ticks_ms()
        if self._ping is not None:
            over = time.ticks_diff(now, self._ping) - self.cfg["timeout"] * 1000
            if over >= 0:
                raise NetworkError("no PINGRESP within %d s" % self.cfg["timeout"], "ping")
            return min(left, -over)
        quiet = max(time.ticks_diff(now, self._tx), time.ticks_diff(now, self._rx))
        idle = self.cfg["keepalive"] * 500 - quiet
        if idle > 0:
            return min(left, idle)
        self._probe()
        return min(left, self.cfg["timeout"] * 1000)

    def _probe(self):
        if self._ping is None:
            self.link.write(b"\xc0\x00")
            self._tx = self._ping = time.ticks_ms()

    def _dispatch(self, topic, payload):
        fn = self._subs.get(topic)
        if fn is None:
            return
        try:
            fn(topic, payload)
        except MemoryError:
            raise
        except Exception as e:  # the application's bug must not end the session
            self._report(e)

    def _report(self, e):
        from aliyun_iot import events

        try:
            events.report(self, e)
        finally:
            forget("events")

    # ---- the application's side

    def publish(self, topic, msg):
        """Publish at QoS 0. Raises NetworkError when offline; the session reconnects by itself."""
        if self.link is None:
            raise NetworkError("offline: reconnecting", "offline")
        try:
            self.link.client.publish(topic, msg)
        except IotError as e:
            self._lost(e)
            raise
        self._tx = time.ticks_ms()

    def _sub(self, t):
        self._pid = self._pid % 65535 + 1
        self._pend[self._pid] = t
        self.link.subscribe(t, self._pid)

    def subscribe(self, topic, cb):
        """Call cb(topic, payload) (both bytes) for every message on topic, also after a reconnect.
        A refusal is reported (on_error, or the log) and the topic dropped."""
        t = topic.encode() if isinstance(topic, str) else topic
        self._subs[t] = cb
        if self.link is not None:
            try:
                self._sub(t)
            except IotError as e:
                self._lost(e)

    def on_property_set(self, fn):
        """fn(params) handles a property set from the cloud and returns the reply code (None: 200)."""
        self._on_set = fn
        self.subscribe(self._set_t, self._set)

    def _set(self, topic, payload):
        from aliyun_iot import events

        try:
            events.property_set(self, topic, payload)
        finally:
            forget("events")  # rare: not held between two property sets

    def _on_reply(self, topic, payload):
        try:
            r = json.loads(payload)
        except ValueError:
            return
        if isinstance(r, dict) and self._want is not None and str(r.get("id")) == self._want:
            self._got = r  # replies nobody waits for are dropped: nothing grows per message

    def post_property(self, params, wait=True):
        """Post properties; with wait, return the platform's reply once it arrives.

        Raises IotError: "post<code>" when the platform refuses it, timeout, offline."""
        self._id = self._id % 1000000 + 1
        mid = str(self._id)
        body = {"id": mid, "version": "1.0", "params": params, "method": "thing.event.property.post"}
        self.publish(self._post_t, json.dumps(body))
        if not wait:
            return None
        limit = self.cfg["timeout"] * 1000
        t0 = time.ticks_ms()
        self._want, self._got = mid, None
        try:
            while self._got is None:
                if self.link is None:
                    raise NetworkError("link lost before the post reply", "closed")
                left = limit - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    try:
                        self._probe()  # is the link still there? check() finds out within the timeout
                    except IotError as e:
                        self._lost(e)
                    raise Timeout("no property post reply within %d s" % self.cfg["timeout"])
                self.check(left)
            r = self._got
        finally:
            self._want = self._got = None
        c = r.get("code")
        if c != 200:
            raise IotError("property post refused: code %s" % c, "post%s" % c, c == 429)
        return r
