# Host stand-in for the ESP32 `machine` module: only what the firmware and the
# virtual board use. Runs on CPython and on the MicroPython unix port.
#   VBOARD_MAC   base MAC "aa:bb:cc:dd:ee:ff" returned by unique_id()
#   VBOARD_LED   path of a file that records every LED pin write ("<pin> <0|1>")
import os
import sys

_RESET_EXIT = 99  # the virtual board restarts the interpreter on this code
_DEFAULT_MAC = "24:0a:c4:00:00:01"

PWRON_RESET = 1
HARD_RESET = 2
SOFT_RESET = 5


def _env(name, default=None):
    try:
        v = os.getenv(name)
    except AttributeError:
        v = None
    return default if v is None else v


def unique_id():
    mac = _env("VBOARD_MAC", _DEFAULT_MAC)
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError("VBOARD_MAC must be 6 hex bytes separated by ':'")
    return bytes(int(p, 16) for p in parts)


def reset():
    # A real board never returns from reset(): leave the interpreter with a
    # code the virtual board turns into a reboot on the same flash.
    sys.exit(_RESET_EXIT)


def soft_reset():
    sys.exit(_RESET_EXIT)


def reset_cause():
    return PWRON_RESET


class WDT:
    """The ESP32's watchdog, checked at each feed: a feed that comes later than the timeout means the
    board would have been reset in between, so it resets now (a hang that never feeds again is the
    test's own timeout). max_gap_ms is the longest time between two feeds, for tests to read."""

    max_gap_ms = 0
    running = None  # the watchdog, once started: the virtual board resets a board left at the REPL with it

    def __init__(self, id=0, timeout=5000):
        import time

        self._timeout = timeout
        self._last = time.ticks_ms()
        WDT.running = self

    def feed(self):
        import time

        now = time.ticks_ms()
        gap = time.ticks_diff(now, self._last)
        self._last = now
        WDT.max_gap_ms = max(WDT.max_gap_ms, gap)
        if gap > self._timeout:
            print("machine: watchdog reset (not fed for %d ms, timeout %d ms)" % (gap, self._timeout))
            sys.exit(_RESET_EXIT)


def freq(*args):
    return 240000000


def idle():
    pass


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, pin, mode=-1, pull=-1, value=None):
        self.pin = pin
        self._v = 0
        if value is not None:
            self.value(value)

    def _record(self):
        path = _env("VBOARD_LED")
        if path:
            with open(path, "a") as f:
                f.write("%d %d\n" % (self.pin, self._v))

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        self._record()

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, v=None):
        return self.value(v)
