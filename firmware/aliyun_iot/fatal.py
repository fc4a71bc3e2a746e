# A fatal error: its report with what the code means and what to do about it
# (docs/troubleshooting.md says the same), the fatal LED pattern
# and the reset. Imported only when a failure is reported, so it costs no RAM
# before (and, frozen, none at all).
import time

from aliyun_iot import IotError, backoff_ms, log, sleep_ms, state

_HINTS = {
    "connack1": "protocol version refused: is this an Alibaba IoT endpoint?",
    "connack2": "identifier rejected: bad clientId parameters (instance_id?), or registration over plain TCP",
    "connack3": "server unavailable (overloaded or rate-limited): retried later",
    "connack4": "bad username or password: wrong ProductSecret, device not added in the console, dynamic"
    " registration disabled for the product, or device already activated (it lost its secret: reset it"
    " with ResetThing in the console)",
    "connack5": "not authorised",
    "activated": "the device is already activated: ResetThing in the console, then reboot",
    "config_missing": "no config.json on the board: make provision",
    "config": "fix the key the message names (docs/config.md)",
    "wifi_auth": "wrong wifi_password",
    "wifi_noap": "wifi_ssid not in range",
    "ntp": "NTP unreachable, and TLS needs the date: open UDP 123, or set the RTC and ntp: false",
    "dns": "the endpoint's name does not resolve: check region, instance_id, host",
    "tls_verify": "certificate not trusted: wrong ca or host, or the clock is wrong",
    "tls_protocol": "the server does not speak TLS on that port (8883 is TLS)",
    "tls_eof": "the connection was cut in the TLS handshake, or the port is not TLS",
    "tls_nomem": "TLS ran out of RAM: freeze the package, keep fewer modules in /lib",
    "corrupt": "the credential file is damaged and kept as it is: make restore, or ResetThing and delete it",
    "full": "the flash is full: the credential was not written",
    "mismatch": "the stored credential is another device's: re-provision deliberately",
}


def hint(code):
    """The explanation of an error code, or None."""
    return _HINTS.get(code)


def fail(e):
    """Report a fatal error on the console, with what its code means."""
    state("failed")
    if isinstance(e, IotError):
        log("fatal %s code=%s: %s" % (type(e).__name__, e.code, e.msg))
        h = hint(e.code)
        if h:
            log("hint: " + h)
    else:
        # Not one of ours: a bug, or out of memory. The traceback is what a bug report needs.
        import sys

        sys.print_exception(e)
        log("fatal %s code=internal: %s" % (type(e).__name__, e))


def recover(e):
    """Report e, show the fatal LED pattern, and reset the board. Never returns.

    Out of memory: reset in 1 s. Retryable (the network): in 30 to 60 s. Not retryable (a refusal, a
    config or storage problem): after the long cap (refused_cap_s, default 1 h), so that a device fixed
    in the console comes back by itself. Whatever raises on the way (the report, the config, the LED's
    Pin, out of memory) only cuts that step short: the reset comes anyway. Only Ctrl-C (someone at the
    console, mpremote) gets the REPL, as before."""
    try:
        try:
            fail(e)
        except Exception:  # a report that cannot be printed must not stop the reset
            pass
        cfg = {"led_pin": None, "refused_cap_s": 3600}
        try:
            from aliyun_iot import config

            cfg = config.load()
        except Exception:  # a broken config is reported already; the defaults will do
            pass
        if isinstance(e, MemoryError):
            d = 1000
        elif isinstance(e, IotError) and not e.retry:
            d = backoff_ms(16, 1000, cfg["refused_cap_s"] * 1000)
        else:
            d = backoff_ms(6)
        try:
            log("restarting in %d s" % (d // 1000))
        except Exception:  # as above
            pass
        led = None
        if cfg["led_pin"] is not None:
            try:
                import machine

                led = machine.Pin(cfg["led_pin"], machine.Pin.OUT)
            except Exception:  # ValueError: a pin this chip cannot drive; the pattern goes without it
                pass
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < d:  # the fatal pattern lasts until the reset
            for v in (1, 0, 1, 0, 1, 0):
                if led:
                    led.value(v)
                sleep_ms(100)
            sleep_ms(500)
    except Exception:  # an LED write, the wait, out of memory: straight to the reset
        pass
    import machine

    machine.reset()
