# The platform's OTA service after every connection (Session.on_up, set by
# otahook.start), kept small: it runs right after a connection, beside the
# session's link. The running version reported, the push topics
# subscribed, a pending task asked for. Everything else (a task, the outcome
# of the last update, a bundle on trial kept) is otajob.py's, loaded only when
# there is something to do. ota/state is boot.py's (the loader): see there.
import json

from aliyun_iot import forget


def run(s, t, p, cb):
    st = {}
    if t is None:
        try:
            with open("ota/state") as f:
                st = json.loads(f.read(512))
        except (OSError, ValueError):
            pass
        if st.get("cur") and "/ota/%s/" % st["cur"] not in globals().get("__file__", ""):
            st = {}  # the bundle the state names is not what runs (no loader in boot.py): nothing to keep
        d = None
    else:  # a push, or firmware/get's reply (its data empty when no task is pending)
        try:
            d = json.loads(p).get("data")
        except (ValueError, AttributeError):
            return
        if not isinstance(d, dict) or not d:
            return
    try:
        open("ota/report").close()
        rep = True
    except OSError:
        rep = False
    if d or rep or "try" in st or "rb" in st:
        from aliyun_iot import otajob

        try:
            otajob.run(s, d, st)
        finally:
            forget("otajob")
        if d:
            return
    tail = s.topic[4:-7]  # b"/{pk}/{dn}"
    for x in (b"/ota/device/upgrade" + tail, s.topic + b"ota/firmware/get_reply"):
        if x not in s.subs:
            s.subscribe(x, cb)
    if st.get("cur"):
        v = st.get("ver")
    else:
        from aliyun_iot import __version__ as v
    s.publish(b"/ota/device/inform" + tail, '{"id":"1","params":{"version":%s}}' % json.dumps(v))
    s.publish(s.topic + b"ota/firmware/get", '{"id":"2","version":"1.0","params":{},'
                                               '"method":"thing.ota.firmware.get"}')
