# The authenticated session the application uses: connect with the stored
# credential, post properties and read their _reply, publish, subscribe with
# a callback, check for messages, ping, and reconnect with capped backoff.
import json
import time

from aliyun_iot import creds
from aliyun_iot.errors import BadReply, IotError, NetworkError, Timeout
from aliyun_iot.mqtt import _PUBLISH, Link

_SUBACK = 0x90


def backoff_ms(attempt, base_ms=1000, cap_ms=60000):
    """Capped exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    import os

    d = min(cap_ms, base_ms << min(attempt, 16))
    r = int.from_bytes(os.urandom(2), "big")
    return d // 2 + (d // 2) * r // 65535


class Session:
    def __init__(self, cfg, cred, log=None):
        self.cfg = cfg
        self.cred = cred
        self.log = log or (lambda msg: None)
        base = "/sys/%s/%s/thing/" % (cred["pk"], cred["dn"])
        self.post_topic = base + "event/property/post"
        self.reply_topic = base + "event/property/post_reply"
        self.link = None
        self._id = 0
        self._pid = 0
        self._subs = {}
        self._replies = {}
        self._last_tx = 0

    def connect(self):
        """Open the connection with the stored credential and subscribe to the reply topic."""
        self.close()
        self.link = Link(
            self.cfg, creds.login_for(self.cred, self.cfg), self.cfg["tls"], self.cfg["keepalive"], 4096
        )
        self._last_tx = time.ticks_ms()
        for t in [self.reply_topic] + list(self._subs):
            self._pid = self._pid % 65535 + 1
            self.link.subscribe(t, self._pid)

    def close(self):
        if self.link is not None:
            self.link.close()
            self.link = None

    def publish(self, topic, msg):
        """Publish at QoS 0."""
        if self.link is None:
            raise NetworkError("not connected", "closed")
        self.link.client.publish(topic, msg)
        self._last_tx = time.ticks_ms()

    def subscribe(self, topic, cb):
        """Call cb(topic, payload) (both bytes) for every message on topic (also after a reconnect)."""
        self._subs[topic] = cb
        if self.link is not None:
            self._pid = self._pid % 65535 + 1
            self.link.subscribe(topic, self._pid)

    def post_property(self, params, wait=True):
        """Post properties; with wait, return the platform's reply object once it arrives."""
        self._id += 1
        mid = str(self._id)
        body = {"id": mid, "version": "1.0", "params": params, "method": "thing.event.property.post"}
        self.publish(self.post_topic, json.dumps(body))
        if not wait:
            return None
        limit = self.cfg["timeout"] * 1000
        t0 = time.ticks_ms()
        while mid not in self._replies:
            left = limit - time.ticks_diff(time.ticks_ms(), t0)
            if left <= 0:
                raise Timeout("no property post reply within %d s" % self.cfg["timeout"])
            self.check(left)
        reply = self._replies.pop(mid)
        if reply.get("code") != 200:
            raise IotError(
                "property post refused: code %s" % reply.get("code"), "post%s" % reply.get("code"), False
            )
        return reply

    def check(self, wait_ms=0):
        """Handle every packet that arrives within wait_ms (0: only those already here). Returns how many."""
        n = 0
        while True:
            first = self.link.sock.poll(wait_ms if n == 0 else 0)
            if first is None:
                return n
            hdr, body = self.link.read_packet(first)
            n += 1
            if hdr & 0xF0 == _PUBLISH:
                self._dispatch(*self.link.parse_publish(hdr, body))
            elif hdr == _SUBACK and body[-1:] == b"\x80":
                raise IotError("subscription refused by the platform", "suback", False)

    def _dispatch(self, topic, payload):
        if topic == self.reply_topic.encode():
            try:
                r = json.loads(payload)
            except ValueError:
                raise BadReply("property post reply is not JSON")
            if isinstance(r, dict) and "id" in r:
                self._replies[str(r["id"])] = r
            return
        cb = self._subs.get(topic.decode())
        if cb is not None:
            cb(topic, payload)

    def ping_if_idle(self):
        """Send PINGREQ when half the keepalive has passed without traffic from us."""
        if time.ticks_diff(time.ticks_ms(), self._last_tx) > self.cfg["keepalive"] * 500:
            self.link.client.ping()
            self._last_tx = time.ticks_ms()

    def reconnect(self, max_attempts=0):
        """Connect again with capped exponential backoff plus jitter; fatal errors end it at once."""
        attempt = 0
        while True:
            try:
                self.connect()
                return
            except IotError as e:
                attempt += 1
                if not e.retry or (max_attempts and attempt >= max_attempts):
                    raise
                d = backoff_ms(attempt, self.cfg["backoff_ms"])
                self.log("reconnect attempt %d failed (%s); next in %d ms" % (attempt, e.code, d))
                time.sleep_ms(d)
