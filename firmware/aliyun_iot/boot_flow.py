# Every boot up to the credential: config, Wi-Fi (with a deadline), the clock
# (TLS since MicroPython 1.22 checks certificate dates and the clock boots at
# 2000-01-01), the stored credential. Each stage imports its modules and drops
# them when it is done, the way _boot.py imports inisetup only on failure;
# aliyun_iot.connect() drops this module before it registers (first boot only:
# aliyun_iot.register) or connects. Failures are reported (and recovered) from
# here.
import time

from aliyun_iot import IotError, backoff_ms, forget, log, sleep_ms, state, watchdog


def _led(cfg):
    if cfg["led_pin"] is None:
        return None
    import machine

    return machine.Pin(cfg["led_pin"], machine.Pin.OUT)


def run(cfg_path="config.json", cred_path="aliyun_iot.cred"):
    """Boot to (cfg, DeviceName, the stored credential or None, the LED pin or None). Raises IotError
    (never with a secret in it) when it cannot."""
    state("boot")
    from aliyun_iot import config

    cfg = config.load(cfg_path)
    dn = config.device_name(cfg)
    del config
    forget("config")
    if cfg["tls"]:
        # The TLS context (the endpoint's root parsed), built on a near-empty heap and kept for every
        # connection: the largest long-lived block is placed before anything can fragment the heap.
        from aliyun_iot import tls

        cfg["ctx"] = tls.for_host(cfg, cfg["host"])
        del tls
        forget("tls")
    led = _led(cfg)
    if led:
        led.value(1)  # on while working towards online
    watchdog(cfg["wdt_s"])
    wifi_up(cfg)
    state("wifi")
    if cfg["ntp"]:
        set_clock(cfg)
        state("clock")
    from aliyun_iot import store

    cred = store.load(cred_path)
    del store
    forget("store")
    if cred is not None and (cred["pk"] != cfg["product_key"] or cred["dn"] != dn):
        raise IotError("stored credential belongs to %s/%s but config.json says %s/%s"
                       % (cred["pk"], cred["dn"], cfg["product_key"], dn), "mismatch")
    if cred is None:
        state("registering")  # aliyun_iot.connect() registers, once this module is dropped
    else:
        log("credential found for %s/%s (%s): registration skipped" % (cred["pk"], cred["dn"], cred["kind"]))
    return cfg, dn, cred, led


def wifi_up(cfg):
    """Join the configured network within cfg['timeout'] seconds (twice that for the first join)."""
    if not cfg["wifi_ssid"]:
        log("no wifi_ssid configured: using the network as it is")
        return
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return
    wlan.connect(cfg["wifi_ssid"], cfg["wifi_password"])
    limit = cfg["timeout"] * 2000
    t0 = time.ticks_ms()
    while not wlan.isconnected():
        st = wlan.status()
        if st == getattr(network, "STAT_WRONG_PASSWORD", -1):
            raise IotError("Wi-Fi %r refused the password" % cfg["wifi_ssid"], "wifi_auth")
        if st == getattr(network, "STAT_NO_AP_FOUND", -1):
            raise IotError("Wi-Fi network %r not found" % cfg["wifi_ssid"], "wifi_noap", True)
        if time.ticks_diff(time.ticks_ms(), t0) > limit:
            wlan.disconnect()
            raise IotError("Wi-Fi %r not joined within %d ms" % (cfg["wifi_ssid"], limit), "wifi_timeout",
                           True)
        sleep_ms(50)


def set_clock(cfg, tries=3):
    """Set the RTC from NTP, a few tries with a growing pause."""
    import ntptime

    ntptime.timeout = min(cfg["timeout"], 5)
    for i in range(tries):
        try:
            ntptime.settime()
            return
        except OSError as e:
            log("clock: NTP attempt %d failed: %s" % (i + 1, e))
            if i + 1 < tries:
                sleep_ms(500 << i)
    raise IotError("clock not set: NTP gave no answer in %d tries (TLS needs the date)" % tries, "ntp", True)


def fail(e):
    """Report a fatal error on the console, with what its code means."""
    state("failed")
    if isinstance(e, IotError):
        log("fatal %s code=%s: %s" % (type(e).__name__, e.code, e.msg))
        from aliyun_iot.explain import hint

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

    Out of memory: reset in 1 s. Retryable (the network): in 32 to 64 s. Not retryable (a refusal, a
    config or storage problem): after the long cap (refused_cap_s, default 1 h), so that a device fixed
    in the console comes back by itself."""
    fail(e)
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
    log("restarting in %d s" % (d // 1000))
    led = _led(cfg)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < d:  # the fatal pattern lasts until the reset
        for v in (1, 0, 1, 0, 1, 0):
            if led:
                led.value(v)
            sleep_ms(100)
        sleep_ms(500)
    import machine

    machine.reset()
