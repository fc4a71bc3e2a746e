"""Fault switches, stored in the registry under "faults", keyed by "PK" (whole product) or "PK/DN".

A fault applies to the connection kinds listed in "on" (default: the two MQTT registrations):
  register, regnwl  MQTT dynamic registration
  https             HTTPS registration
  connect           authenticated sessions (DeviceSecret or deviceToken); reply faults act on property posts
Fields (all optional):
  refuse N      CONNACK return code N instead of the normal verdict (https: JSON {"code": N})
  after         "quiet" (CONNACK 0, then silence) or "close" (CONNACK 0, then close)
  payload_hex   these raw bytes instead of the real reply
  topic         publish the reply on this topic instead
  double        send the reply twice
  huge          announce a PUBLISH of 268435455 bytes, send a few, then stop
  delay_ms      wait this long before the reply
  rate          at most this many registrations per second for the key (excess: CONNACK 3)
  reply_code    answer property posts with this Alink code instead of 200 (with "on": connect)
  times         the fault expires after firing this many times
A device's fault fields override its product's.
"""

import collections
import time

KINDS = ("register", "regnwl", "https", "connect")
DEFAULT_ON = ["register", "regnwl"]
AFTER = ("quiet", "close")
TLS_FAULTS = ("none", "expired", "wronghost", "unknownca", "plain")  # start-time switches (--tls-fault)
HUGE_LENGTH = 268_435_455  # the largest remaining length MQTT can encode
_BEHAVIOUR = ("refuse", "after", "payload_hex", "topic", "double", "huge", "delay_ms", "reply_code")


class FaultError(ValueError):
    """A fault specification that makes no sense."""


def make(on=None, refuse=None, after=None, payload=None, topic=None, double=False, huge=False,
         delay_ms=None, rate=None, times=None, reply_code=None):
    """Validated fault dict; payload is bytes."""
    fault = {"on": list(on or DEFAULT_ON)}
    for kind in fault["on"]:
        if kind not in KINDS:
            raise FaultError("unknown kind %r (allowed: %s)" % (kind, ", ".join(KINDS)))
    if refuse is not None:
        mqtt = [k for k in fault["on"] if k != "https"]
        if not 0 <= refuse <= (255 if mqtt else 99999):
            raise FaultError("--refuse takes a CONNACK code 0..255 (a JSON code when --on is only https)")
        fault["refuse"] = refuse
    if after is not None:
        if after not in AFTER:
            raise FaultError("after must be quiet or close")
        fault["after"] = after
    if payload is not None:
        fault["payload_hex"] = payload.hex()
    if topic is not None:
        if not topic:
            raise FaultError("--topic must not be empty")
        fault["topic"] = topic
    if double:
        fault["double"] = True
    if huge:
        fault["huge"] = True
    if delay_ms is not None:
        if delay_ms < 0:
            raise FaultError("--delay takes milliseconds >= 0")
        fault["delay_ms"] = delay_ms
    if rate is not None:
        if rate < 1:
            raise FaultError("--rate takes registrations per second >= 1")
        fault["rate"] = rate
    if reply_code is not None:
        if "connect" not in fault["on"]:
            raise FaultError("--reply-code acts on property posts: it needs --on connect")
        fault["reply_code"] = reply_code
    if times is not None:
        if times < 1:
            raise FaultError("--times takes a count >= 1")
        fault["times"] = times
    if len(fault) == 1:
        raise FaultError("a fault needs at least one switch")
    return fault


class Active:
    """The faults that apply to one connection, merged from its product's and its device's entries."""

    def __init__(self, fields=None, keys=(), rate=None):
        self.fields = fields or {}
        self.keys = list(keys)          # registry keys whose entries contributed behaviour
        self.rate = rate                # (key, per_second) or None

    def __bool__(self):
        return bool(self.fields)

    def get(self, name, default=None):
        return self.fields.get(name, default)

    @property
    def payload(self):
        raw = self.fields.get("payload_hex")
        return None if raw is None else bytes.fromhex(raw)


def lookup(data, pk, dn, kind):
    """Merge the product's then the device's fault entries that apply to this kind of connection."""
    merged, keys, rate = {}, [], None
    faults = data.get("faults", {})
    for key in (pk, "%s/%s" % (pk, dn) if dn else None):
        entry = faults.get(key) if key else None
        if not entry or kind not in entry.get("on", DEFAULT_ON):
            continue
        behaviour = {k: entry[k] for k in _BEHAVIOUR if k in entry}
        if behaviour:
            merged.update(behaviour)
            keys.append(key)
        if "rate" in entry:
            rate = (key, entry["rate"])
    return Active(merged, keys, rate)


def consume(data, keys):
    """Count one firing against each entry's `times`; an entry that reaches zero is removed."""
    faults = data.get("faults", {})
    for key in keys:
        entry = faults.get(key)
        if entry and "times" in entry:
            entry["times"] -= 1
            if entry["times"] <= 0:
                del faults[key]


class RateLimiter:
    """Sliding one-second window per registry key."""

    def __init__(self):
        self._seen = collections.defaultdict(collections.deque)

    def allow(self, key, per_second, now=None):
        now = time.monotonic() if now is None else now
        seen = self._seen[key]
        while seen and now - seen[0] >= 1.0:
            seen.popleft()
        if len(seen) >= per_second:
            return False
        seen.append(now)
        return True
