# The session against a hostile MQTT server (host_tests/test_session_hostile.py):
# argv[1] its port, argv[2] the case, which the server reads from the
# DeviceName. Plain MQTT (the link's code is the same under TLS), except the
# "handshake" case, which needs a TLS context (argv[3]: a CA's DER file).
# The machine.WDT shim records the longest gap between two feeds.
import sys
import time

import devkit
import machine

import aliyun_iot
from aliyun_iot import IotError, config
from aliyun_iot.session import Session

PORT = int(sys.argv[1])
CASE = sys.argv[2]
TIMEOUT = 2
cfg = config.validate({"product_key": "pkHostile1", "product_secret": "x", "host": "127.0.0.1", "port": PORT,
                       "tls": False, "timeout": TIMEOUT, "keepalive": 60, "backoff_ms": 100,
                       "retry_cap_s": 6, "refused_cap_s": 6})
cfg["ctx"] = None
if CASE == "handshake":
    from aliyun_iot import tls

    cfg["tls"] = True
    cfg["ca"] = sys.argv[3]
    cfg["ctx"] = tls.for_host(cfg, "127.0.0.1")
    cfg["timeout"] = TIMEOUT = 1
aliyun_iot._w = machine.WDT(timeout=30000)
s = Session(cfg, {"kind": "secret", "pk": "pkHostile1", "dn": CASE, "ds": "secret"})
errors = []
s.on_error = lambda e: errors.append(getattr(e, "code", type(e).__name__))
sets = []


def on_set(params):
    sets.append(params)


def ms_since(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def until(cond, ms):
    t0 = time.ticks_ms()
    while not cond() and ms_since(t0) < ms:
        s.check(100)
    return cond()


def timed_post(params):
    """(code or IotError code, ms taken)."""
    t0 = time.ticks_ms()
    try:
        r = s.post_property(params)["code"]
    except IotError as e:
        r = e.code
    return r, ms_since(t0)


if CASE == "handshake":
    # The server trickles a TLS record a byte every 0.3 s: the connection ends at its deadline (3 x timeout).
    t0 = time.ticks_ms()
    s.check(0)
    took = ms_since(t0)
    ok = not s.online and took < 3000 * TIMEOUT + 2000
    devkit.check("handshake-ends-at-its-deadline", ok, "took %d ms" % took)
    devkit.check("handshake-watchdog-fed", machine.WDT.max_gap_ms <= 1500, "gap %d" % machine.WDT.max_gap_ms)
    sys.exit(0)

if CASE == "close":
    # Accepts and closes at once: the backoff grows (backoff_ms 50, retry_cap_s 3: a minute at 1/20 scale).
    s.cfg["backoff_ms"] = 50
    s.cfg["retry_cap_s"] = 3
    t0 = time.ticks_ms()
    while ms_since(t0) < 3000:
        s.check(50)
    devkit.info("connections in 3 s: %d" % s.connects)
    devkit.check("accept-and-close-backs-off", s.connects <= 12, "%d connections" % s.connects)
    devkit.check("accept-and-close-not-kicked", "kicked" not in errors, repr(errors))
    sys.exit(0)

ups = []


def on_up(sess):
    # The hook after each connection (the OTA code's): a failure in it is reported, the session goes on.
    ups.append(sess.connects)
    if CASE == "kick":
        raise ValueError("a bug in on_up")


s.on_up = on_up
s.on_property_set(on_set)
if not until(lambda: s.online, 5000):
    devkit.fail("online", "not online")
    sys.exit(0)
s.check(300)  # the SUBACKs

if CASE == "api":
    devkit.raises("post-a-str", TypeError, s.post_property, "temperature", 21)
    devkit.raises("subscribe-swapped", TypeError, s.subscribe, on_set, "/a/b")
    devkit.raises("publish-an-int", TypeError, s.publish, "/a/b", 21)
    s.publish("/pkHostile1/api/user/x", "h\u00e9")
    devkit.equal("post-a-dict", s.post_property({"temperature": 21})["code"], 200)
    devkit.equal("on-up-after-the-connection", ups, [1])

elif CASE == "nestset":
    # Sets with an id nested 1,500 deep, id 1e999, params not an object; then a good one.
    until(lambda: sets, 5000)
    devkit.equal("nested-set-stays-online", (s.online, s.connects), (True, 1))
    devkit.equal("bad-sets-reported", errors, ["bad_msg", "bad_msg", "bad_msg"])
    devkit.equal("good-set-applied", sets, [{"a": 1}])

elif CASE == "nestreply":
    # The reply to the post carries an id nested 1,500 deep.
    r, took = timed_post({"n": 1})
    devkit.equal("nested-reply-post-fails-timeout", r, "timeout")
    devkit.equal("nested-reply-stays-online", (s.online, s.connects), (True, 1))
    devkit.equal("nested-reply-reported", errors, ["bad_msg"])

elif CASE in ("trickle", "len4"):
    # The post's reply trickles in (a byte every 150 ms; or a 4-byte length, a byte every 1.5 s).
    r, took = timed_post({"n": 1})
    devkit.check("trickled-reply-bounded", took <= 1000 * TIMEOUT + 2000, "%s after %d ms" % (r, took))
    devkit.check("trickled-reply-fails", r in ("timeout", "closed"), repr(r))
    devkit.check("trickle-watchdog-fed", machine.WDT.max_gap_ms <= 1500, "gap %d" % machine.WDT.max_gap_ms)

elif CASE == "kick":
    # Closed 300 ms after a working start (its SUBACKs): kicked, reported, and the backoff grows.
    until(lambda: s.connects >= 3, 8000)
    devkit.check("kicked-reported", errors.count("kicked") >= 2, repr(errors))
    devkit.check("kicked-young-counts", s.fails >= 2, "fails %d" % s.fails)
    ok = errors.count("ValueError") >= 3 and ups[:3] == [1, 2, 3]
    devkit.check("on-up-failure-reported", ok, repr(errors))

elif CASE == "subrefuse":
    # The first connection refuses both own subscriptions, and ends after 1 s; the next grants them.
    r1, took = timed_post({"n": 1})
    until(lambda: s.connects == 2 and s.online, 5000)
    s.check(300)
    r2, took = timed_post({"n": 2})
    until(lambda: sets, 3000)
    devkit.equal("refusals-reported", errors.count("suback"), 2)
    devkit.equal("post-after-resubscribe", (r1, r2), ("timeout", 200))
    devkit.equal("set-after-resubscribe", sets, [{"b": 2}])

elif CASE == "stream":
    # Sets arrive without a pause: check(1000) returns, and a post whose reply is in the stream too.
    t0 = time.ticks_ms()
    s.check(1000)
    took = ms_since(t0)
    devkit.check("check-bounded-under-a-stream", took <= 2000, "check(1000) took %d ms" % took)
    r, took = timed_post({"n": 1})
    ok = r == 200 and took <= 1000 * TIMEOUT
    devkit.check("post-bounded-under-a-stream", ok, "%s after %d ms" % (r, took))
    devkit.check("stream-handled", len(sets) > 10, "%d sets" % len(sets))

elif CASE == "qos":
    # A QoS 2 set (dropped, reported), a QoS 1 set and its DUP resend (applied once), then a QoS 0 one.
    until(lambda: len(sets) >= 2, 5000)
    s.check(300)
    devkit.equal("qos1-dup-applied-once", sets, [{"q": 1}, {"q": 0}])
    devkit.equal("qos2-reported", errors, ["bad_msg"])

elif CASE == "nested":
    # A set arrives while a post waits; its handler posts too: both posts get their replies.
    inner = []

    def on_set2(params):
        inner.append(s.post_property({"inner": 1})["code"])

    s.on_set = on_set2
    r, took = timed_post({"outer": 1})
    devkit.equal("post-from-a-handler", (r, inner), (200, [200]))

elif CASE == "oversize":
    # A set over 4 KB: reported (oversize), the link dropped and made again; a later set is answered.
    until(lambda: sets, 5000)
    devkit.check("oversize-reported", "oversize" in errors, repr(errors))
    devkit.equal("after-oversize", (sets, s.online), ([{"c": 3}], True))

s.close()
devkit.ok("done")
