# First boot and every boot after it: config, Wi-Fi, clock, then register
# only when no credential is stored, persist it, connect with it, and say
# "online" with a property post. Registration code is imported only when it
# is needed, the way _boot.py imports inisetup only on failure.
import time

from aliyun_iot import config, store, wdt
from aliyun_iot.errors import IotError, StorageError

_T0 = time.ticks_ms()
_led = None
_cfg = None


def log(msg):
    print("aliyun_iot: " + msg)


def state(name):
    log("state %s t=%d" % (name, time.ticks_diff(time.ticks_ms(), _T0)))


def fingerprint(secret):
    """First 4 hex digits of the secret's SHA-256: enough to tell two apart, useless to an attacker."""
    import hashlib
    from binascii import hexlify

    return hexlify(hashlib.sha256(secret.encode()).digest()).decode()[:4]


class Led:
    """The status LED, where the board's settings name a pin: on while working, blinking on failure."""

    def __init__(self, pin):
        self.pin = None
        if pin is not None:
            import machine

            self.pin = machine.Pin(pin, machine.Pin.OUT)

    def set(self, on):
        if self.pin is not None:
            self.pin.value(1 if on else 0)

    def blink(self, times, ms=150):
        for _ in range(times):
            self.set(1)
            time.sleep_ms(ms)
            self.set(0)
            time.sleep_ms(ms)


def _forget(*names):
    import gc
    import sys

    import aliyun_iot

    for name in names:
        sys.modules.pop(name, None)
        try:  # the package holds its submodules as attributes too
            delattr(aliyun_iot, name.rpartition(".")[2])
        except (AttributeError, KeyError):  # MicroPython: KeyError
            pass
    gc.collect()


def register(cfg, dn):
    """Obtain a credential: retry what a retry can fix (capped backoff, jitter); stop at once otherwise."""
    if cfg["mode"] == "https":
        from aliyun_iot.https import register_once
    else:
        from aliyun_iot.register import register_once
    attempt = 0
    while True:
        attempt += 1
        log(
            "registering %s/%s mode=%s attempt %d/%d t=%d"
            % (
                cfg["product_key"],
                dn,
                cfg["mode"],
                attempt,
                cfg["attempts"],
                time.ticks_diff(time.ticks_ms(), _T0),
            )
        )
        try:
            return register_once(cfg, dn)
        except IotError as e:
            if not e.retry or attempt >= cfg["attempts"]:
                raise
            d = wdt.backoff_ms(attempt - 1, cfg["backoff_ms"])
            log("attempt %d failed: %s (%s); retrying in %d ms" % (attempt, e.msg, e.code, d))
            wdt.sleep_ms(d)


def run(cfg_path="config.json", cred_path=store.PATH):
    """Boot to an online Session. Raises IotError (never with a secret in it) when it cannot."""
    state("boot")
    global _led, _cfg
    _cfg = cfg = config.load(cfg_path)
    _led = led = Led(cfg["led_pin"])
    led.set(1)
    wdt.start(cfg["wdt_s"])
    dn = config.device_name(cfg)
    from aliyun_iot import net

    net.wifi_up(cfg, log)
    state("wifi")
    if cfg["ntp"]:
        net.set_clock(cfg, log)
        state("clock")
    cred = store.load(cred_path)
    if cred is not None and (cred["pk"] != cfg["product_key"] or cred["dn"] != dn):
        raise StorageError(
            "stored credential belongs to %s/%s but config.json says %s/%s; re-provision deliberately"
            % (cred["pk"], cred["dn"], cfg["product_key"], dn),
            "mismatch",
        )
    if cred is None:
        state("registering")
        cred = register(cfg, dn)
        _forget("aliyun_iot.register", "aliyun_iot.https")  # first-boot code: give its RAM back
        store.save(cred, cred_path)
        state("stored")
        secret = cred.get("ds") or cred.get("tok")
        log("credential %s stored: %d chars, sha256 %s..." % (cred["kind"], len(secret), fingerprint(secret)))
        state("registered")
    else:
        log("credential found for %s/%s (%s): registration skipped" % (cred["pk"], cred["dn"], cred["kind"]))
    state("connecting")
    from aliyun_iot.session import Session

    s = Session(cfg, cred, log)
    s.led = led
    while not s.online:  # a refused or failed connection waits on the session's policy, no reboot
        s.check(1000)
    state("connected")
    from aliyun_iot.mqtt import Link

    log("umqtt.simple API generation: %s" % Link.generation)
    try:
        s.post_property({"online": 1})
    except IotError as e:  # the session stays; the application sees the next post's fate
        log("online post failed (%s): %s" % (e.code, e.msg))
    state("online")
    led.set(0)
    return s


def fail(e):
    """Report a fatal error on the console."""
    state("failed")
    if isinstance(e, IotError):
        log("fatal %s code=%s: %s" % (type(e).__name__, e.code, e.msg))
    else:
        # Not one of ours: a bug, or out of memory. The traceback is what a bug report needs.
        import sys

        sys.print_exception(e)
        log("fatal %s code=internal: %s" % (type(e).__name__, e))


def recover(e):
    """Report e, show the fatal LED pattern, and reset the board when a retry may help. Never returns.

    Out of memory: reset in 1 s. Retryable (the network): in 32 to 64 s. Not retryable (a refusal, a
    config or storage problem): after the long cap (refused_cap_s, default 1 h), so that a device fixed
    in the console comes back by itself."""
    fail(e)
    backoff_ms = wdt.backoff_ms
    if isinstance(e, MemoryError):
        d = 1000
    elif isinstance(e, IotError) and not e.retry:
        d = backoff_ms(16, 1000, (_cfg["refused_cap_s"] if _cfg else 3600) * 1000)
    else:
        d = backoff_ms(6)
    log("restarting in %d s" % (d // 1000))
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < d:  # the fatal pattern lasts until the reset
        wdt.feed()
        if _led is not None:
            _led.blink(3, 100)
        time.sleep_ms(500)
    import machine

    machine.reset()
