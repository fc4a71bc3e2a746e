# One power-on of an OTA-capable board (cwd: the flash), argv[1] the mode: "plain" comes online without
# the OTA service; "hook" starts it (otahook.start); "update" starts it and waits for a task to reset the
# board (machine.reset leaves with SystemExit here: printed as RESET; a failed task: NO-RESET once
# reported); "trial" runs the loader (boot.py) first, as on the board, starts the service and waits until
# the bundle on trial is kept (KEPT).
# argv[2]: seconds to wait at most. Once online: HELD, gc.mem_alloc() after gc.collect().
# "plain" and "hook" boot the factory layout as tools/devrun/boot_once.py does, without the loader: here
# boot.py's imports (the machine shim) stay in the GC heap, about 8 KiB, where a board has them in ROM.
import gc
import os
import sys
import time

mode = sys.argv[1]
limit = int(sys.argv[2]) * 1000
if mode in ("update", "trial"):
    flash = os.getcwd()
    exec(open("boot.py").read(), {"__name__": "boot"})
    os.chdir(flash)  # main.py does this on the board (its files are at the root)

import aliyun_iot  # noqa: E402 - from the bundle when the loader picked one


def _trial():
    try:
        with open("ota/state") as f:
            return '"try"' in f.read()
    except OSError:
        return False


if mode == "trial" and _trial():
    print("TRIAL")  # the loader runs the bundle on trial
def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


try:
    s = aliyun_iot.connect()
    if mode != "plain":
        from aliyun_iot import otahook

        otahook.start(s)
    print("RESULT online")
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < limit:
        s.check(100)
        if mode == "trial" and not _trial():
            print("KEPT")
            s.check(200)
            break
        if mode == "plain" or mode == "hook" and time.ticks_diff(time.ticks_ms(), t0) > 300:
            break  # the service's first exchange (version reported, pending task asked for) done
        if mode == "update" and s.connects >= 2 and s.online and not _exists("ota/report"):
            print("NO-RESET")  # the task failed, reported once the link came back
            break
    gc.collect()
    if hasattr(gc, "mem_alloc"):
        print("HELD %d" % gc.mem_alloc())
    s.close()
except SystemExit as e:
    print("RESET %s" % (e.args[0] if e.args else ""))
