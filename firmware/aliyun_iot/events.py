# The session's rare events, kept out of the RAM of the running session:
# a property set from the cloud, and the reports of what the application
# should know (its own failures, messages refused, being kicked off).
import json
import time

from aliyun_iot import IotError, backoff_ms, forget, log

_DEPTH = 16  # JSON nesting taken off the wire (link.py's)
# What the session reports by key: (code, message).
_WHAT = {
    "qos": ("bad_msg", "QoS 2 message dropped: every subscription is QoS 0"),
    "id": ("bad_msg", "post reply dropped: not an Alink reply"),
    "kicked": ("kicked", "kicked off: the server closed a working link (another login with this credential)"),
}
_USAGE = (
    'publish(topic, msg): topic str or bytes, msg str (sent as UTF-8) or bytes, e.g. publish(t, "on")',
    "subscribe(topic, cb): topic str or bytes, cb a function cb(topic, payload)",
    'post_property takes a dict: post_property({"temperature": 21})',
)


def usage(n):
    """Raise the TypeError of a misused call (session.py)."""
    raise TypeError(_USAGE[n])


def _lost(s, e):
    """Close s's lost link (IotError e) and schedule the next connection. A link that had not proven
    itself (a round trip, then a minute up) counts as a failed connection: the backoff grows. The server
    closing a link that had answered is named kicked (another login with this credential, as the platform
    does) and reported; kicked young, it backs off on the long cap, as a refused login does."""
    now = time.ticks_ms()
    ok = time.ticks_diff(s.rx, s.next) >= 0  # it has answered (next: when the link was made; rx 1 ms before)
    kicked = ok and e.code in ("closed", "tls_eof")
    log("link lost (%s): reconnecting" % ("kicked" if kicked else e.code))
    s.close()
    forget("neterr")  # imported to name the failure; not held while online
    if s.led:
        s.led.value(1)
    young = not ok or time.ticks_diff(now, s.next) < 60000
    s.fails = s.fails + 1 if young else 0
    cap = s.cfg["refused_cap_s" if kicked and young else "retry_cap_s"]
    s.next = time.ticks_add(now, backoff_ms(s.fails, s.cfg["backoff_ms"], cap * 1000))
    if kicked:
        report(s, "kicked")


def up(s):
    """s.on_up(s) after a connection; what it raises is reported, never ends the session."""
    try:
        s.on_up(s)
    except MemoryError:
        raise
    except Exception as e:  # the application's hook must not end the session
        report(s, e)


def report(s, e):
    """Hand e (an exception, or a key of _WHAT) to the application's on_error, or log it (with the
    traceback of a bug). Never raises but MemoryError: an on_error that fails is logged."""
    if isinstance(e, str):
        c, m = _WHAT[e]
        e = IotError(m, c, c == "kicked")
    elif getattr(e, "msg", "")[:11] == "packet over":
        e = IotError("message dropped: " + e.msg, "oversize", True)
    if s.on_error is not None:
        try:
            s.on_error(e)
            return
        except MemoryError:
            raise
        except Exception as x:  # the application's bug must not end the session
            e = x
    if not hasattr(e, "code"):
        import sys

        sys.print_exception(e)
    log("application error %s: %s" % (getattr(e, "code", type(e).__name__), e))


def deep(b):
    """True when JSON text b nests deeper than _DEPTH (refused before json.loads builds it)."""
    if b.count(b"[") + b.count(b"{") <= _DEPTH:
        return False
    d = 0
    q = esc = False
    for c in b:
        if q:
            if esc:
                esc = False
            elif c == 92:
                esc = True
            elif c == 34:
                q = False
        elif c == 34:
            q = True
        elif c == 91 or c == 123:
            d += 1
            if d > _DEPTH:
                return True
        elif c == 93 or c == 125:
            d -= 1
    return False


def _id(i):
    # An Alink id the reply can carry back: a string ("0" to "4294967295" on the platform) or an integer,
    # within bounds (no float: 1e999 is inf, which is not JSON).
    return type(i) is int and -(1 << 63) <= i < 1 << 64 or type(i) is str and len(i) <= 64


def property_set(s, topic, payload):
    """Run the application's handler on an Alink property set and answer on ..._reply with its code; a
    request that is not one is reported (bad_msg) and, when its id is usable, answered with 460."""
    r = None
    if not deep(payload):
        try:
            r = json.loads(payload)
        except (ValueError, RuntimeError):  # not JSON; CPython: RecursionError
            pass
    mid = r.get("id") if isinstance(r, dict) else None
    if not _id(mid):
        report(s, IotError("property set dropped: not an Alink request", "bad_msg"))
        return
    params = r.get("params")
    if not isinstance(params, dict):
        report(s, IotError("property set %s answered 460: params not an object" % mid, "bad_msg"))
        code = 460
    else:
        try:
            code = s.on_set(params)
        except MemoryError:
            raise
        except Exception as e:  # the application's bug: reported, answered with 500
            report(s, e)
            code = 500
        if code is None:
            code = 200
        elif type(code) is not int:
            report(s, TypeError("on_property_set must return an int code or None"))
            code = 500
    body = {"id": mid, "code": code, "data": {}, "version": "1.0"}
    s.publish(topic + b"_reply", json.dumps(body))
