# Runs first on every reset: the OTA loader, outside what an update replaces.
# ota/state (aliyun_iot/otajob.py writes it last, by rename, to switch):
#   {"cur": slot, "ver": v, "old": slot, "ov": v, "try": boots left on trial, "t": trial seconds,
#    "rb": v rolled back}
# cur "a" or "b": the bundle in ota/<cur> runs (its dir first on sys.path, its main.py run by the
# firmware, which looks in the current dir); no state, or cur "": the factory layout (/main.py, /lib).
# A bundle on trial that has used up its boots without coming online is replaced by the old one; on a
# trial boot, a one-shot machine.Timer(0) resets the board after "t" s unless the bundle, once online,
# stops it (aliyun_iot/otajob.py): a bundle that hangs or sits offline uses up its boots.
# A soft reset (Ctrl-D, mpremote entering the raw REPL: machine.reset_cause() is SOFT_RESET until the
# next chip reset, ports/esp32/modmachine.c) changes nothing: no trial boot is counted and the current
# dir stays "/", so the host tools (make deploy, backup, provision) see the board's own files. Only a
# power-on, machine.reset(), the watchdog or EN runs the bundle.
import gc
import os
import sys

import machine


def _pick(machine):
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
                try:
                    machine.Timer(0, mode=machine.Timer.ONE_SHOT, period=(st.get("t") or 600) * 1000,
                                  callback=lambda t, r=machine.reset: r())
                except (AttributeError, ValueError, OSError):
                    pass  # no machine.Timer (the host's shims): the boots count alone
    except (OSError, ValueError, AttributeError, TypeError):
        return ""  # no bundle yet (or an unreadable state): the factory layout
    try:
        os.stat("ota/%s/main.py" % d)
    except OSError:
        return ""
    return d and "ota/" + d


_d = machine.reset_cause() != machine.SOFT_RESET and _pick(machine)
if _d:
    sys.path.insert(0, os.getcwd().rstrip("/") + "/" + _d)
    os.chdir(_d)  # the firmware runs main.py from the current dir: the bundle's
del _d, _pick, machine
gc.collect()
