# One boot of an OTA-capable board against the emulator (cwd: the flash; argv[1]: seconds to stay online at
# most). boot.py (the loader) runs first, as on the board; then the session: after its first connection
# the version is reported and a pending task asked for; a task downloads, installs and resets (machine.reset
# leaves with SystemExit here: printed as RESET). Without a reset, it stays until the link has come back
# after a failed task (ota/report reported) and the time is up.
import os
import sys
import time

import devkit

flash = os.getcwd()
exec(open("boot.py").read(), {"__name__": "boot"})
picked = os.getcwd()[len(flash):]
os.chdir(flash)  # main.py does this on the board (its files are at the root)
print("LOADER %s" % (picked or "factory"))
if len(sys.argv) > 2 and sys.argv[2] == "main" and picked:  # run the bundle's main.py, as the board does
    try:
        exec(open(picked[1:] + "/main.py").read(), {"__name__": "__main__"})
    except SystemExit as e:
        print("RESET %s" % (e.args[0] if e.args else ""))
    devkit.ok("ran")
    sys.exit(0)

import aliyun_iot  # noqa: E402 - from the bundle when the loader picked one

print("PACKAGE %s" % ("bundle" if "/ota/a/" in aliyun_iot.__file__ or "/ota/b/" in aliyun_iot.__file__
                      else "factory"))
limit = int(sys.argv[1]) * 1000 if len(sys.argv) > 1 else 20000
try:
    s = aliyun_iot.connect()
    from aliyun_iot import otahook

    otahook.start(s)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < limit:
        s.check(200)
        try:
            os.stat("ota/report")
            pending = True
        except OSError:
            pending = False
        if not pending and s.connects >= 2 and s.online:
            s.check(500)
            break
    print("CONNECTS %d" % s.connects)
    s.close()
except SystemExit as e:
    print("RESET %s" % (e.args[0] if e.args else ""))
import gc  # noqa: E402

import micropython  # noqa: E402

gc.collect()
if hasattr(gc, "mem_alloc"):
    print("HEAP held=%d peak=%d" % (gc.mem_alloc(), micropython.mem_peak()))
devkit.ok("ran")
