# The authenticated session that runs for months. check() serves the link
# and, when the link is down, reconnects by itself on the schedule of the
# policy table (docs/life-after-online.md). Link trouble never reaches the
# application; its own failures (a refused post, a refused subscription) do,
# and never end the session. What only a connection needs (serving packets,
# keepalive, a post's wait) is in link.py, in RAM only while connected: a
# reconnection's TLS handshake has this module and dial.py beside it.
import time

from aliyun_iot import IotError, _stage, forget, sleep_ms


class Session:
    """The device's MQTT session. Call check() from the application's loop, at least every second."""

    def __init__(self, cfg, cred):
        # The state of a session for cfg (config.json's, checked) and the stored credential cred: set up by
        # creds.py (which computes its login), whose code is then not held for the session's life.
        _stage("creds", "session", (), self, cfg, cred)

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

    # What is rare (a report, a lost link, on_up, a misused call) is in events.py, loaded for the call.

    def event(self, e):
        """Hand e (an exception, or the key of one of events.py's) to on_error, or the log."""
        _stage("events", "report", (), self, e)

    def _lost(self, e):
        # The link is lost: closed, and the next connection scheduled (events.py: the rule).
        if self.link is not None:
            _stage("events", "_lost", (), self, e)

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
            return self.link.serve(self, time.ticks_add(t0, wait_ms))
        d = time.ticks_diff(self.next, t0)
        if d > 0:
            sleep_ms(min(d, wait_ms))
        if d <= wait_ms:
            # The lost link's garbage collected from this frame, before dial's code is loaded (a collection
            # that an allocation starts deep in the import found less room); the connection-time code gone
            # before the link is made.
            forget()
            up = _stage("dial", "retry", ("neterr",), self)
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
                if self.link is not None and self.on_up is not None:
                    _stage("events", "up", (), self)
        return 0

    # ---- the application's side

    def publish(self, topic, msg):
        """Publish msg (str: sent as UTF-8, or bytes) on topic (str or bytes) at QoS 0. Raises IotError
        (code offline) when offline; the session reconnects by itself."""
        # type() comparisons: a tuple for isinstance() would be built (allocated) on every publish.
        t, m = type(topic), type(msg)
        if t is not str and t is not bytes or m is not str and m is not bytes and m is not bytearray:
            _stage("events", "usage", (), 0)
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
        """Call cb(topic: bytes, payload: bytearray) for every message on topic (str or bytes), also after a
        reconnect. A refusal is reported (on_error, or the log) and tried again at the next connection."""
        if not isinstance(topic, (str, bytes)) or not callable(cb):
            _stage("events", "usage", (), 1)
        self.sub(topic.encode() if isinstance(topic, str) else topic, cb)

    def sub(self, t, cb):
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
        self.sub(self.topic + b"service/property/set", True)  # True: events.py (link.py)

    def post_property(self, params, wait=True):
        """Post properties (a dict); with wait, return the platform's reply once it arrives, within the
        timeout. A handler may post; one called while another handler waits must use wait=False.

        Raises IotError: "post<code>" when the platform refuses it, timeout, offline, busy."""
        if type(params) is not dict:
            _stage("events", "usage", (), 2)
        if self.link is None:
            raise IotError("offline", "offline", True)
        return self.link.post(self, params, wait)
