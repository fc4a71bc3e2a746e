# Runs first on every reset: the OTA loader, outside what an update replaces.
# ota/state (aliyun_iot/otajob.py writes it last, by rename, to switch):
#   {"cur": slot, "ver": v, "old": slot, "ov": v, "try": boots left on trial, "rb": v rolled back}
# cur "a" or "b": the bundle in ota/<cur> runs (its dir first on sys.path, its main.py run by the
# firmware, which looks in the current dir); no state, or cur "": the factory layout (/main.py, /lib).
# A bundle on trial that has used up its boots without coming online is replaced by the old one.
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
