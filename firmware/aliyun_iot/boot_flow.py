# First boot and every boot after it: config, Wi-Fi, clock, then register
# only when no credential is stored, persist it, connect with it, and say
# "online" with a property post. Registration code is imported only when it
# is needed, the way _boot.py imports inisetup only on failure.
import time

from aliyun_iot import config, store
from aliyun_iot.errors import IotError, StorageError

_T0 = time.ticks_ms()
_led = None


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

    for name in names:
        sys.modules.pop(name, None)
    gc.collect()


def register(cfg, dn):
    """Obtain a credential: retry what a retry can fix (capped backoff, jitter); stop at once otherwise."""
    if cfg["mode"] == "https":
        from aliyun_iot.https import register_once
    else:
        from aliyun_iot.register import register_once
    from aliyun_iot.session import backoff_ms

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
            d = backoff_ms(attempt - 1, cfg["backoff_ms"])
            log("attempt %d failed: %s (%s); retrying in %d ms" % (attempt, e.msg, e.code, d))
            time.sleep_ms(d)


def run(cfg_path="config.json", cred_path=store.PATH):
    """Boot to an online Session. Raises IotError (never with a secret in it) when it cannot."""
    state("boot")
    global _led
    cfg = config.load(cfg_path)
    _led = led = Led(cfg["led_pin"])
    led.set(1)
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
    s.connect()
    state("connected")
    from aliyun_iot.mqtt import Link

    log("umqtt.simple API generation: %s" % Link.generation)
    s.post_property({"online": 1})
    state("online")
    led.set(0)
    return s


def fail(e):
    """Report a fatal error on the console (and blink the LED, if the config named one)."""
    state("failed")
    if isinstance(e, IotError):
        log("fatal %s code=%s: %s" % (type(e).__name__, e.code, e.msg))
    else:
        # Not one of ours: a bug. The traceback is what a bug report needs.
        import sys

        if hasattr(sys, "print_exception"):
            sys.print_exception(e)
        log("fatal %s code=internal: %s" % (type(e).__name__, e))
    if _led is not None:
        _led.blink(5)
