# Host stand-in for ESP32 `ntptime`. The host clock is already right, so
# settime() only checks that the call is made; VBOARD_NTP_FAIL=N makes the
# first N calls of each process fail with a timeout, as a dead NTP server does.
import os

host = "pool.ntp.org"
timeout = 1
_calls = [0]


def settime():
    _calls[0] += 1
    try:
        fail = int(os.getenv("VBOARD_NTP_FAIL") or 0)
    except AttributeError:
        fail = 0
    if _calls[0] <= fail:
        raise OSError(110)  # ETIMEDOUT


def time():
    import time as _t

    return int(_t.time()) - 946684800
