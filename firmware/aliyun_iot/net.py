# Wi-Fi up and the clock set, each with a deadline. TLS since MicroPython
# 1.22 checks certificate dates and the clock boots at 2000-01-01.
import time

from aliyun_iot import wdt
from aliyun_iot.errors import NetworkError, Timeout


def wifi_up(cfg, log):
    """Join the configured network within cfg['timeout'] seconds (twice that for the first join)."""
    if not cfg["wifi_ssid"]:
        log("no wifi_ssid configured: using the network as it is")
        return None
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return wlan
    wlan.connect(cfg["wifi_ssid"], cfg["wifi_password"])
    limit = cfg["timeout"] * 2000
    t0 = time.ticks_ms()
    while not wlan.isconnected():
        st = wlan.status()
        if st == getattr(network, "STAT_WRONG_PASSWORD", -1):
            raise NetworkError("Wi-Fi %r refused the password" % cfg["wifi_ssid"], "wifi_auth", False)
        if st == getattr(network, "STAT_NO_AP_FOUND", -1):
            raise NetworkError("Wi-Fi network %r not found" % cfg["wifi_ssid"], "wifi_noap")
        if time.ticks_diff(time.ticks_ms(), t0) > limit:
            wlan.disconnect()
            raise Timeout("Wi-Fi %r not joined within %d ms" % (cfg["wifi_ssid"], limit), "wifi_timeout")
        wdt.sleep_ms(50)
    return wlan


def set_clock(cfg, log, tries=3):
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
                time.sleep_ms(500 << i)
    raise NetworkError("clock not set: NTP gave no answer in %d tries (TLS needs the date)" % tries, "ntp")
