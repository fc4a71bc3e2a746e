# Every boot up to the credential: config, Wi-Fi (with a deadline), the clock
# (TLS since MicroPython 1.22 checks certificate dates and the clock boots at
# 2000-01-01), the stored credential. Each stage imports its modules and drops
# them when it is done, the way _boot.py imports inisetup only on failure;
# aliyun_iot.connect() drops this module before it registers (first boot only:
# aliyun_iot.register) or connects. Failures are reported and recovered by
# aliyun_iot.fatal.
import time

from micropython import const

import aliyun_iot
from aliyun_iot import IotError, forget, log, sleep_ms, state

_NTP_TRIES = const(3)


def run(cfg_path="config.json", cred_path="aliyun_iot.cred"):
    """Boot to (cfg, DeviceName, the stored credential or None, the LED pin or None). Raises IotError
    (never with a secret in it) when it cannot."""
    state("boot")
    from aliyun_iot import config

    cfg = config.load(cfg_path)
    dn = config.device_name(cfg)
    del config
    forget("config")
    cfg["ctx"] = None
    if cfg["tls"]:
        # The TLS context (the endpoint's root parsed), built on a near-empty heap and kept for every
        # connection: the largest long-lived block is placed before anything can fragment the heap. Built
        # here rather than through _stage() (as registration does): in _stage()'s frame it landed where a
        # normal boot then needed 0.5 KiB more heap (make bench).
        from aliyun_iot import tls

        cfg["ctx"] = tls.for_host(cfg, cfg["host"])
        del tls
        forget("tls")
    led = None
    if cfg["led_pin"] is not None:
        import machine

        led = machine.Pin(cfg["led_pin"], machine.Pin.OUT)
        led.value(1)  # on while working towards online
    if cfg["wdt_s"] and aliyun_iot._w is None:  # it cannot be stopped again on an ESP32; 0 leaves it off
        import machine

        aliyun_iot._w = machine.WDT(timeout=cfg["wdt_s"] * 1000)
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
    noap = getattr(network, "STAT_NO_AP_FOUND", -1)
    auth = getattr(network, "STAT_WRONG_PASSWORD", -1)
    # The port retries by itself after connect() and status() keeps the last failed attempt's reason
    # while the next one runs (ports/esp32/network_wlan.c): a 201 or 202 is final only once it has
    # stayed for half the deadline (several attempts of 1-3 s), or is still there at the deadline.
    t0 = since = time.ticks_ms()
    last = None
    while not wlan.isconnected():
        st = wlan.status()
        now = time.ticks_ms()
        if st != last:
            last, since = st, now
        over = time.ticks_diff(now, t0) > limit
        if st in (noap, auth) and (over or time.ticks_diff(now, since) >= limit // 2):
            wlan.disconnect()
            if st == auth:
                raise IotError("Wi-Fi %r refused the password" % cfg["wifi_ssid"], "wifi_auth")
            raise IotError("Wi-Fi network %r not found" % cfg["wifi_ssid"], "wifi_noap", True)
        if over:
            wlan.disconnect()
            raise IotError("Wi-Fi %r not joined within %d ms" % (cfg["wifi_ssid"], limit), "wifi_timeout",
                           True)
        sleep_ms(50)


def set_clock(cfg):
    """Set the RTC from NTP, a few tries with a growing pause."""
    import ntptime

    ntptime.timeout = min(cfg["timeout"], 5)
    for i in range(_NTP_TRIES):
        try:
            ntptime.settime()
            return
        except OSError as e:
            log("clock: NTP attempt %d failed: %s" % (i + 1, e))
            if i + 1 < _NTP_TRIES:
                sleep_ms(500 << i)
    raise IotError("clock not set: NTP gave no answer in %d tries (TLS needs the date)" % _NTP_TRIES, "ntp",
                   True)
