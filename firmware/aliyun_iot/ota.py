# The platform's OTA service after every connection (Session.on_up, through
# aliyun_iot._ota): the outcome of the last update reported (a failure, a
# rollback), a new bundle on trial kept, the running version reported, the
# push topics subscribed and a pending task asked for. A push or the answer
# to that question goes to otajob.py, loaded for it only. In RAM only while
# it works. The state file is boot.py's (the loader): see there.
import json
import os

from aliyun_iot import forget, log

STATE = "ota/state"
REPORT = "ota/report"  # a result to report once online: {"step": -2, "desc": "...", "module": ...}


def read(path):
    """A small JSON file, or None (missing or unreadable)."""
    try:
        with open(path) as f:
            return json.loads(f.read(512))
    except (OSError, ValueError):
        return None


def write(path, d):
    """Replace a small JSON file atomically (littlefs: rename over an existing file is atomic)."""
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(d))
    os.rename(path + ".tmp", path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def running(st=None):
    """The running bundle's version (the factory layout: the package's)."""
    st = read(STATE) if st is None else st
    if st and st.get("cur"):
        return st.get("ver") or "?"
    from aliyun_iot import __version__

    return __version__


def progress(s, step, desc="", module=None):
    p = {"step": str(step), "desc": desc}
    if module:
        p["module"] = module
    s.publish(b"/ota/device/progress" + s.topic[4:-7], json.dumps({"id": "1", "params": p}))


def run(s, t, p, cb):
    if t is not None:  # a push, or firmware/get's reply
        from aliyun_iot import otajob

        try:
            otajob.handle(s, t, p)
        finally:
            forget("otajob")
        return
    tail = s.topic[4:-7]  # b"/{pk}/{dn}"
    st = read(STATE) or {}
    rep = read(REPORT)
    if "try" in st:  # the new bundle is online: it stays
        del st["try"]
        write(STATE, st)
        rep = {"step": 100, "desc": "updated"}
        log("ota: %s online, kept" % st.get("ver"))
    if st.get("rb"):
        rep = {"step": -1, "desc": "rolled back: %s did not come online" % st.pop("rb")}
        write(STATE, st)
        log("ota: " + rep["desc"])
    for x in (b"/ota/device/upgrade" + tail, s.topic + b"ota/firmware/get_reply"):
        if x not in s.subs:
            s.subscribe(x, cb)
    if rep:
        progress(s, rep["step"], rep["desc"], rep.get("module"))
        remove(REPORT)
    s.publish(b"/ota/device/inform" + tail, json.dumps({"id": "1", "params": {"version": running(st)}}))
    s.publish(s.topic + b"ota/firmware/get", json.dumps({"id": "2", "version": "1.0", "params": {},
                                                           "method": "thing.ota.firmware.get"}))
