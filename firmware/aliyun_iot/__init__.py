# Alibaba Cloud IoT Platform dynamic registration for MicroPython.
# This module is what stays in RAM for the device's life: the one error type,
# the console line and the watchdog's waits. Each boot stage imports its
# modules and drops them when it is done (docs/ram.md).
import time

__version__ = "0.3.0"
_T0 = None
_w = None  # the machine.WDT, once the boot has started it


class IotError(Exception):
    """Every failure of the package: a short code (docs/troubleshooting.md; fatal.py on the board) and
    whether trying again can help. Callers never retry what cannot succeed."""

    def __init__(self, msg, code="error", retry=False):
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.retry = retry


def log(msg):
    """One console line of the package (never a secret)."""
    print("aliyun_iot: " + msg)


def state(name):
    """Log a boot stage with the ms since the first one."""
    global _T0
    if _T0 is None:
        _T0 = time.ticks_ms()
    log("state %s t=%d" % (name, time.ticks_diff(time.ticks_ms(), _T0)))


def sleep_ms(ms):
    """time.sleep_ms in slices of at most a second, the watchdog fed around each (sleep_ms(0): fed)."""
    while True:
        if _w is not None:
            _w.feed()
        if ms <= 0:
            return
        time.sleep_ms(min(ms, 1000))
        ms -= 1000


def backoff_ms(n, t=1000, end=60000):
    """Capped exponential backoff with jitter, for attempt n (0 first), t ms the base, end ms the cap:
    uniform in [d/2, d], d = min(end, t * 2**n)."""
    # (Argument names are qstrs, interned for good when the module loads: these are the port's own.)
    import os

    d = min(end, t << min(n, 16))
    return d // 2 + (d // 2) * int.from_bytes(os.urandom(2), "big") // 65535


def connect(cfg_path="config.json", cred_path="aliyun_iot.cred"):
    """Bring the device online and return its Session: Wi-Fi, clock, the stored credential (registering
    on the first boot only), the MQTT connection and an "online" post. Raises IotError when it cannot;
    a refused or failed connection is retried on the session's policy (docs/life-after-online.md)."""
    s = _stage("start", "run", (), cfg_path, cred_path)  # start.py: not in RAM once connecting
    while not s.online:
        s.check(1000)
    state("connected")
    try:
        s.post_property({"online": 1})
    except IotError as e:  # the session stays; the application sees the next post's fate
        log("online post failed (%s)" % e.code)
    state("online")
    return s


def _stage(name, f, val, *args):
    # One stage of the boot (aliyun_iot.<name>.<f>) in a frame of its own, its module and the modules named
    # in `val` forgotten once it returns. The collector scans the stack conservatively: a frame that is
    # still running keeps alive whatever its slots last pointed at (a stage's module, the whole config).
    try:
        return getattr(__import__("aliyun_iot." + name, None, None, (f,)), f)(*args)
    finally:
        forget(name, *val)


def recover(e):
    """Report exception e and reset the board when a retry can help (docs/life-after-online.md)."""
    try:
        from aliyun_iot import fatal

        fatal.recover(e)
    except Exception:  # fatal itself failed (out of memory loading it): reset all the same, not the REPL
        pass
    import machine

    machine.reset()


def forget(*names):
    """Drop submodules whose stage is done (sys.modules and this package both hold them)."""
    import gc
    import sys

    for n in names:
        sys.modules.pop("aliyun_iot." + n, None)
        globals().pop(n, None)
    gc.collect()
