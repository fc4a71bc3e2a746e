# The session's rare events, kept out of the RAM of the running session:
# a property set from the cloud, and the reports of what the application
# should know (its own failures, messages refused, being kicked off).
import json

from aliyun_iot import IotError, log


def report(s, e):
    """Hand e to the application's on_error, or log it (with the traceback of a bug). Never raises but
    MemoryError: an on_error that fails is logged."""
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


def _id(i):
    # An Alink id the reply can carry back: a string ("0" to "4294967295" on the platform) or an integer,
    # within bounds (no float: 1e999 is inf, which is not JSON).
    return type(i) is int and -(1 << 63) <= i < 1 << 64 or type(i) is str and len(i) <= 64


def property_set(s, topic, payload):
    """Run the application's handler on an Alink property set and answer on ..._reply with its code; a
    request that is not one is reported (bad_msg) and, when its id is usable, answered with 460."""
    r = None
    if not s.link.deep(payload):
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
