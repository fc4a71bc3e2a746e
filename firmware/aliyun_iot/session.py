# The authenticated session that runs for months. check() serves the link
# and, when the link is down, reconnects by itself on the schedule of the
# policy table (docs/life-after-online.md). Link trouble never reaches the
# application; its own failures (a refused post, a refused subscription) do,
# and never end the session. What only a connection needs (serving packets,
# keepalive, a post's wait) is in link.py, in RAM only while connected: a
# reconnection's TLS handshake has this module and dial.py beside it.
import time

from aliyun_iot import IotError, backoff_ms, forget, log, sleep_ms


class Session:
    """The device's MQTT session. Call check() from the application's loop, at least every second."""

    on_up = None  # fn(session) after every connection, once its subscriptions are sent (a class attribute:
    # the instance's dict is not grown for it until one is set)

    def __init__(self, cfg, cred):
        from aliyun_iot import creds

        self.login = creds.login_for(cred, cfg)  # computed once: the signing code is dropped
        forget("creds")
        # What a reconnection needs of config.json (no Wi-Fi password, no ProductSecret); ctx: the TLS
        # context the boot built (None without TLS).
        self.cfg = {k: cfg.get(k) for k in ("host", "port", "tls", "ca", "ctx", "timeout", "keepalive",
                                             "backoff_ms", "retry_cap_s", "refused_cap_s")}
        # led: a machine.Pin (set by the boot flow), on while offline; on_error: fn(exc), the application's
        # failures reported from check(); ping: when an unanswered PINGREQ went out; want: the post id
        # awaited (a str), then its reply (a dict).
        self.led = self.on_error = self.on_set = self.link = self.ping = self.want = None
        self.topic = ("/sys/%s/%s/thing/" % (cred["pk"], cred["dn"])).encode()
        # topic -> fn(topic, payload); None: the post replies, True: property sets (both in link.py)
        self.subs = {self.topic + b"event/property/post_reply": None}
        self.pend = {}  # packet id -> topic, until its SUBACK
        self.connects = self.fails = self.n = self.up = 0
        self.next = self.tx = self.rx = self.t = time.ticks_ms()

    @property
    def online(self):
        return self.link is not None

    def uptime_s(self):
        """Seconds since the session was made; survives the ticks wrap (12.4 days on an ESP32)."""
        self.check(-1)
        return self.up // 1000

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
        sleep_ms(0)  # the watchdog
        if wait_ms < 0:  # uptime_s(): the clock only
            return 0
        if self.link is not None:
            return self.link.serve(self, wait_ms, t0)
        d = time.ticks_diff(self.next, t0)
        if d > 0:
            sleep_ms(min(d, wait_ms))
        if d <= wait_ms:
            from aliyun_iot import dial

            try:
                up = dial.retry(self)
            finally:
                dial = None
                forget("dial", "neterr")  # connection-time code, gone before the link is made
            if up:  # the Link (a deadline on every read), and the subscriptions, pipelined
                from aliyun_iot.link import Link

                client, raw = up
                # 4 KB: the largest packet a session takes.
                self.link = Link(client.sock, self.cfg["timeout"] * 1000, 4096, raw, client)
                forget("link")
                try:
                    for t in self.subs:
                        self.link.sub(self, t)
                except IotError as e:
                    self._lost(e)
                lk = self.link
                if self.on_up and lk:
                    try:
                        self.on_up(self)
                    except MemoryError:
                        raise
                    except Exception as e:  # reported (events.py), never the end of the session
                        lk.event(self, None, e)
        return 0

    # ---- the application's side

    def publish(self, topic, msg):
        """Publish msg (str: sent as UTF-8, or bytes) on topic at QoS 0. Raises IotError (code offline)
        when offline; the session reconnects by itself."""
        if self.link is None:
            raise IotError("offline", "offline", True)
        # umqtt.simple (every release, micropython-lib umqtt.simple/simple.py) counts len() of what it is
        # given and writes its UTF-8: a str with a non-ASCII character would corrupt the packet.
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(msg, str):
            msg = msg.encode()
        try:
            self.link.client.publish(topic, msg)
        except IotError as e:
            self._lost(e)
            raise
        self.tx = time.ticks_ms()

    def subscribe(self, topic, cb):
        """Call cb(topic, payload) (both bytes) for every message on topic, also after a reconnect.
        A refusal is reported (on_error, or the log) and the topic dropped."""
        t = topic.encode() if isinstance(topic, str) else topic
        if len(t) > 122:  # checked before it is kept: it is sent again at every reconnection
            raise ValueError("topic longer than 122 bytes")
        self.subs[t] = cb
        if self.link is not None:
            try:
                self.link.sub(self, t)
            except IotError as e:
                self._lost(e)

    def on_property_set(self, fn):
        """fn(params) handles a property set from the cloud and returns the reply code (None: 200)."""
        self.on_set = fn
        self.subscribe(self.topic + b"service/property/set", True)  # True: events.py (link.py)

    def post_property(self, params, wait=True):
        """Post properties; with wait, return the platform's reply once it arrives.

        Raises IotError: "post<code>" when the platform refuses it, timeout, offline."""
        if self.link is None:
            raise IotError("offline", "offline", True)
        return self.link.post(self, params, wait)
