# Waits: the hardware watchdog (machine.WDT), when the config asks for one,
# fed by every wait of the package so that only a real hang resets the board;
# and the capped backoff with jitter that spaces retries.
import time

_w = None


def start(seconds):
    """Start the watchdog (it cannot be stopped again on an ESP32); 0 leaves it off."""
    global _w
    if seconds and _w is None:
        import machine

        _w = machine.WDT(timeout=seconds * 1000)


def feed():
    if _w is not None:
        _w.feed()


def sleep_ms(ms):
    """time.sleep_ms that keeps the watchdog fed."""
    while ms > 0:
        feed()
        d = min(ms, 1000)
        time.sleep_ms(d)
        ms -= d
    feed()


def backoff_ms(attempt, base_ms=1000, cap_ms=60000):
    """Capped exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    import os

    d = min(cap_ms, base_ms << min(attempt, 16))
    r = int.from_bytes(os.urandom(2), "big")
    return d // 2 + (d // 2) * r // 65535
