# Every boot: config, Wi-Fi, clock, the stored credential (registering on the
# first boot only: aliyun_iot.register), then the session, ready to connect.
# Each stage imports its modules and drops them when it is done, the way
# _boot.py imports inisetup only on failure; aliyun_iot.connect() drops this
# module before it connects. Failures are reported (and recovered) from here.
import time

from aliyun_iot import forget, log, state, wdt
from aliyun_iot.errors import IotError, StorageError


def _led(cfg):
    if cfg["led_pin"] is None:
        return None
    import machine

    return machine.Pin(cfg["led_pin"], machine.Pin.OUT)


def run(cfg_path="config.json", cred_path="aliyun_iot.cred"):
    """Boot to a Session ready to connect (aliyun_iot.connect() brings it online). Raises IotError
    (never with a secret in it) when it cannot."""
    state("boot")
    from aliyun_iot import config

    cfg = config.load(cfg_path)
    dn = config.device_name(cfg)
    del config
    forget("config")
    led = _led(cfg)
    if led:
        led.value(1)  # on while working towards online
    wdt.start(cfg["wdt_s"])
    from aliyun_iot import net

    net.wifi_up(cfg, log)
    state("wifi")
    if cfg["ntp"]:
        net.set_clock(cfg, log)
        state("clock")
    del net
    forget("net")
    from aliyun_iot import store

    cred = store.load(cred_path)
    del store
    forget("store")
    if cred is not None and (cred["pk"] != cfg["product_key"] or cred["dn"] != dn):
        raise StorageError(
            "stored credential belongs to %s/%s but config.json says %s/%s" % (cred["pk"], cred["dn"],
                                                                              cfg["product_key"], dn),
            "mismatch",
        )
    if cred is None:
        state("registering")
        from aliyun_iot import register

        cred = register.obtain(cfg, dn, cred_path, log, state)
        del register
        forget("register", "https", "store", "creds", "sign")  # first-boot code: give its RAM back
    else:
        log("credential found for %s/%s (%s): registration skipped" % (cred["pk"], cred["dn"], cred["kind"]))
    state("connecting")
    from aliyun_iot.session import Session

    s = Session(cfg, cred)
    s.led = led  # on until online
    return s


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
        d = wdt.backoff_ms(16, 1000, cfg["refused_cap_s"] * 1000)
    else:
        d = wdt.backoff_ms(6)
    log("restarting in %d s" % (d // 1000))
    led = _led(cfg)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < d:  # the fatal pattern lasts until the reset
        for v in (1, 0, 1, 0, 1, 0):
            if led:
                led.value(v)
            wdt.sleep_ms(100)
        wdt.sleep_ms(500)
    import machine

    machine.reset()
