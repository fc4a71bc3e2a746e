# Alibaba Cloud IoT Platform dynamic registration for MicroPython.
# Kept tiny: each stage imports its modules and drops them when it is done.
import time

__version__ = "0.2.0"
_T0 = None


def log(msg):
    """One console line of the package (never a secret)."""
    print("aliyun_iot: " + msg)


def state(name):
    """Log a boot stage with the ms since the first one."""
    global _T0
    if _T0 is None:
        _T0 = time.ticks_ms()
    log("state %s t=%d" % (name, time.ticks_diff(time.ticks_ms(), _T0)))


def connect(cfg_path="config.json"):
    """Bring the device online and return its Session: Wi-Fi, clock, the stored credential (registering
    on the first boot only), the MQTT connection and an "online" post. Raises IotError when it cannot;
    a refused or failed connection is retried on the session's policy (README: Life after online)."""
    from aliyun_iot import boot_flow

    try:
        s = boot_flow.run(cfg_path)
    finally:
        forget("boot_flow")  # the boot's code is not held while connecting, nor after
    while not s.online:
        s.check(1000)
    state("connected")
    log("umqtt.simple API generation: %s" % s.link.generation)
    try:
        s.post_property({"online": 1})
    except Exception as e:  # an IotError: the session stays; the application sees the next post's fate
        log("online post failed (%s)" % e.code)
    state("online")
    if s.led:
        s.led.value(0)
    return s


def recover(e):
    """Report exception e and reset the board when a retry can help (README: Life after online)."""
    from aliyun_iot import boot_flow

    boot_flow.recover(e)


def forget(*names):
    """Drop submodules whose stage is done (sys.modules and this package both hold them)."""
    import gc
    import sys

    for n in names:
        sys.modules.pop("aliyun_iot." + n, None)
        globals().pop(n, None)
    gc.collect()
