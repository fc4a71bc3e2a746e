# The session's rare events, kept out of the RAM of the running session:
# a property set from the cloud, and the application's own failures.
import json

from aliyun_iot import log


def report(s, e):
    """Hand e to the application's on_error, or log it (with the traceback of a bug)."""
    if s.on_error is not None:
        s.on_error(e)
        return
    if not hasattr(e, "code"):
        import sys

        sys.print_exception(e)
    log("application error %s: %s" % (getattr(e, "code", type(e).__name__), e))


def property_set(s, topic, payload):
    """Run the application's handler on an Alink property set and answer on ..._reply with its code."""
    try:
        r = json.loads(payload)
        mid, params = r["id"], r["params"]
    except (ValueError, KeyError, TypeError):
        log("property set ignored: not an Alink request")
        return
    try:
        code = s.on_set(params)
    except MemoryError:
        raise
    except Exception as e:  # the application's bug: reported, answered with 500
        report(s, e)
        code = 500
    body = {"id": mid, "code": 200 if code is None else code, "data": {}, "version": "1.0"}
    s.publish(topic + b"_reply", json.dumps(body))
