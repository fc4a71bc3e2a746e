# The real main.py (copied to the flash dir by the test, its post interval
# shortened) with counters around its session: check() calls, connections,
# posts and their fate, the heap after a collection, the watchdog's longest
# gap. One "SOAK k=v ..." line a second. A line "subscribe TOPIC" written to
# soak.cmd on the flash makes the application subscribe to TOPIC.
import gc
import os
import time

import machine

from aliyun_iot import session

_S = session.Session
_check, _post = _S.check, _S.post_property
st = {"checks": 0, "ok": 0, "failed": 0, "t": time.ticks_ms(), "t0": time.ticks_ms()}


def _report(s):
    gc.collect()
    heap = gc.mem_alloc() if hasattr(gc, "mem_alloc") else -1
    print(
        "SOAK checks=%d connects=%d online=%d heap=%d gap=%d ok=%d failed=%d up=%d"
        % (st["checks"], s.connects, s.link is not None, heap, machine.WDT.max_gap_ms, st["ok"],
           st["failed"], time.ticks_diff(time.ticks_ms(), st["t0"]) // 1000)
    )
    try:
        f = open("soak.cmd")
    except OSError:
        return
    with f:
        cmd = f.read().strip()
    os.remove("soak.cmd")
    if cmd.startswith("subscribe "):
        s.subscribe(cmd[10:], lambda t, m: None)
        print("SOAK-CMD subscribed")


def check(self, wait_ms=0):
    st["checks"] += 1
    now = time.ticks_ms()
    if time.ticks_diff(now, st["t"]) >= 1000:
        st["t"] = now
        _report(self)
    return _check(self, wait_ms)


def post_property(self, params, wait=True):
    try:
        r = _post(self, params, wait)
    except Exception as e:
        st["failed"] += 1
        print("SOAK-POST failed %s" % getattr(e, "code", type(e).__name__))
        raise
    st["ok"] += 1
    print("SOAK-POST ok")
    return r


_S.check = check
_S.post_property = post_property
with open("main.py") as f:
    exec(f.read())
