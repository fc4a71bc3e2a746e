# One power-on of the firmware's boot flow in the current directory (the
# board's flash), without main.py's endless application loop. With the
# argument "reconnect": once online, the link is dropped and the session
# connects again (a lost link's reconnection, with the session resident).
import sys

import micropython

import aliyun_iot

try:
    s = aliyun_iot.connect()
except Exception as e:  # the test reads the outcome from the console, as a user would
    from aliyun_iot import fatal

    fatal.fail(e)
    print("RESULT fatal %s %s" % (type(e).__name__, getattr(e, "code", "?")))
else:
    if sys.argv[1:] == ["reconnect"]:
        s.close()
        while not s.online:
            s.check(1000)
        s.post_property({"reconnected": 1})
    print("RESULT online")
    import gc

    gc.collect()
    if hasattr(gc, "mem_alloc"):
        print("HELD %d" % gc.mem_alloc())  # what the application is left without, while online
    for name in ("register", "https"):  # first-boot code must be gone once the credential is stored
        if "aliyun_iot." + name in sys.modules or hasattr(aliyun_iot, name):
            print("FIRST-BOOT aliyun_iot.%s" % name)
    s.close()
if hasattr(micropython, "mem_peak"):
    print("MEM peak=%d" % micropython.mem_peak())
