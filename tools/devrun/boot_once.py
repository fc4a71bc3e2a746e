# One power-on of the firmware's boot flow in the current directory (the
# board's flash), without main.py's endless application loop.
import micropython

from aliyun_iot import boot_flow

try:
    s = boot_flow.run()
except Exception as e:  # the test reads the outcome from the console, as a user would
    boot_flow.fail(e)
    print("RESULT fatal %s %s" % (type(e).__name__, getattr(e, "code", "?")))
else:
    print("RESULT online")
    s.close()
if hasattr(micropython, "mem_peak"):
    print("MEM peak=%d" % micropython.mem_peak())
