# Runs first on every reset: the OTA loader, outside what an update replaces.
# ota/state (aliyun_iot/otajob.py writes it last, by rename, to switch):
#   {"cur": slot, "ver": v, "old": slot, "ov": v, "try": boots left on trial, "t": trial seconds,
#    "rb": v rolled back}
# cur "a" or "b": the bundle in ota/<cur> runs (its dir first on sys.path, its main.py run by the
# firmware, which looks in the current dir); no state, or cur "": the factory layout (/main.py, /lib).
# A bundle on trial that has used up its boots without coming online is replaced by the old one; on a
# trial boot, a one-shot machine.Timer(0) resets the board after "t" s unless the bundle, once online,
# stops it (aliyun_iot/otajob.py): a bundle that hangs or sits offline uses up its boots.
import gc
import os
import sys


def _pick():
    import json

    try:
        with open("ota/state") as f:
            st = json.loads(f.read(512))
        d = st.get("cur") or ""
        if "try" in st:
            if st["try"] > 0:
                st["try"] -= 1
            else:
                st = {"cur": st.get("old") or "", "ver": st.get("ov"), "rb": st.get("ver")}
                d = st["cur"]
            with open("ota/state.tmp", "w") as f:
                f.write(json.dumps(st))
            os.rename("ota/state.tmp", "ota/state")
            if "try" in st:
                import machine

                try:
                    machine.Timer(0, mode=machine.Timer.ONE_SHOT, period=(st.get("t") or 600) * 1000,
                                  callback=lambda t: machine.reset())
                except (AttributeError, ValueError, OSError):
                    pass  # no machine.Timer (the host's shims): the boots count alone
    except (OSError, ValueError, AttributeError, TypeError):
        return ""  # no bundle yet (or an unreadable state): the factory layout
    try:
        os.stat("ota/%s/main.py" % d)
    except OSError:
        return ""
    return d and "ota/" + d


_d = _pick()
if _d:
    sys.path.insert(0, os.getcwd().rstrip("/") + "/" + _d)
    os.chdir(_d)  # the firmware runs main.py from the current dir: the bundle's
del _d, _pick
gc.collect()
