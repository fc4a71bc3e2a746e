# Host stand-in for the ESP32 `machine` module: only what the firmware and the
# virtual board use. Runs on CPython and on the MicroPython unix port.
#   VBOARD_MAC   base MAC "aa:bb:cc:dd:ee:ff" returned by unique_id()
#   VBOARD_LED   path of a file that records every LED pin write ("<pin> <0|1>")
#   VBOARD_CHIP  esp32 (default), esp32s3 or esp32c3: Pin's GPIO table and messages (see Pin)
#   VBOARD_SPIRAM  "1": the esp32 SPIRAM build, without GPIO 16-17
import os
import sys

_RESET_EXIT = 99  # the virtual board restarts the interpreter on this code
_DEFAULT_MAC = "24:0a:c4:00:00:01"

# ports/esp32/modmachine.c@v1.28.0 (reset_reason_t, mp_machine_reset_cause): a soft reset (Ctrl-D,
# mpremote entering the raw REPL) reads SOFT_RESET until the next chip reset; machine.reset() is
# esp_restart(), ESP_RST_SW, read as HARD_RESET; the watchdogs read WDT_RESET.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
_cause = PWRON_RESET  # the virtual board's driver sets it for each boot (tools/vboard/repl_driver.py)


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
    return _cause


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


# Each chip's GPIO table as the generic firmware builds it: ports/esp32/machine_pin.h (the same
# tables at v1.23.0 .. v1.28.0), (first, last) ranges of the pins that exist:
# - esp32 (ESP32_GENERIC, no SPIRAM): 0-23 but 16-17 only without SPIRAM, 25-27, 32-39;
#   GPIO_FIRST_NON_OUTPUT is 34 (machine_pin.c): 34-39 are inputs only;
# - esp32s3 (ESP32_GENERIC_S3: sdkconfig.spiram_sx sets CONFIG_SPIRAM, so no 26; CONFIG_USB_CDC_ENABLED
#   is never set, so 19-20 exist; MICROPY_HW_ESP32S3_EXTENDED_IO defaults to 1): 0-21, 33-48;
# - esp32c3 (ESP32_GENERIC_C3, sdkconfig.c3usb: the USB serial JTAG holds 18-19): 0-13, 20-21.
# VBOARD_CHIP picks the chip (default esp32); VBOARD_SPIRAM=1 drops esp32's 16-17 (the SPIRAM build).
_PINS = {
    "esp32": ((0, 23), (25, 27), (32, 39)),
    "esp32s3": ((0, 21), (33, 48)),
    "esp32c3": ((0, 13), (20, 21)),
}
_FIRST_NON_OUTPUT = {"esp32": 34}  # machine_pin.c@v1.28.0: ESP32 (and S2, P4); none on S3, C3


def _chip():
    c = _env("VBOARD_CHIP", "esp32")
    if c not in _PINS:
        raise ValueError("VBOARD_CHIP must be one of esp32, esp32s3, esp32c3")
    return c


def _exists(chip, n):
    if chip == "esp32" and n in (16, 17) and _env("VBOARD_SPIRAM") == "1":
        return False
    for lo, hi in _PINS[chip]:
        if lo <= n <= hi:
            return True
    return False


class Pin:
    # modmachine/machine_pin.c: IN = GPIO_MODE_INPUT, OUT = GPIO_MODE_INPUT_OUTPUT,
    # OPEN_DRAIN = GPIO_MODE_INPUT_OUTPUT_OD; bit 1 (GPIO_MODE_DEF_OUTPUT) is "drives the pin"
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, pin, mode=None, pull=None, value=None):
        chip = _chip()
        # machine_pin_find: an int outside the table (or any other object) is "invalid pin"
        if isinstance(pin, bool) or not isinstance(pin, int) or not _exists(chip, pin):
            raise ValueError("invalid pin")
        self.pin = pin
        self._v = 0
        if value is not None:
            self.value(value)
        first = _FIRST_NON_OUTPUT.get(chip)
        if mode is not None and first is not None and pin >= first and mode & 2:
            raise ValueError("pin can only be input")

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
