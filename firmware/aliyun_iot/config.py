# config.json: read, defaults filled in, and checked for whatever would break
# the device: unknown keys (a typo never falls back to a default), required
# keys, types, choices and ranges. Character sets and lengths are checked on
# the host before a file reaches a board (tools/config_schema.py, which
# provision runs on top of this). Imported for the boot's first step, then
# dropped.
import json
from binascii import hexlify

from aliyun_iot import IotError

# No const() (the host tools import this module on CPython): limits are literals where they are used,
# and tables used by one function are its locals; each module-level name is a qstr, interned for good.
# key: (type: s str, i int, b bool; default). product_key and product_secret are required.
SPEC = {
    "product_key": ("s", None),
    "product_secret": ("s", None),
    "device_name": ("s", None),
    "region": ("s", "cn-shanghai"),
    "instance_id": ("s", None),
    "host": ("s", None),
    "port": ("i", None),
    "auth_host": ("s", None),
    "auth_port": ("i", None),
    "mode": ("s", "register"),
    "sign_method": ("s", "hmacsha256"),
    "wifi_ssid": ("s", None),
    "wifi_password": ("s", ""),
    "ca": ("s", None),
    "tls": ("b", True),
    "keepalive": ("i", 300),
    "led_pin": ("i", None),
    "ntp": ("b", True),
    "timeout": ("i", 10),
    "attempts": ("i", 5),
    "backoff_ms": ("i", 1000),
    "retry_cap_s": ("i", 60),
    "refused_cap_s": ("i", 3600),
    "wdt_s": ("i", None),
    "ota_trial_boots": ("i", 3),
    "ota_trial_s": ("i", 600),
}
RANGES = {
    "port": (1, 65535),
    "auth_port": (1, 65535),
    "keepalive": (30, 1200),
    "led_pin": (0, 48),
    "timeout": (1, 120),
    "attempts": (1, 20),
    "backoff_ms": (100, 600000),
    "retry_cap_s": (1, 3600),
    "refused_cap_s": (1, 86400),
    "ota_trial_boots": (1, 20),
    "ota_trial_s": (60, 86400),
}
CHOICES = {"mode": ("register", "regnwl", "https"), "sign_method": ("hmacsha256", "hmacsha1", "hmacmd5")}


def chip():
    """The board's chip (esp32, esp32s3, esp32c3): the last word of os.uname().machine, "<board> with <MCU>"
    (extmod/modos.c); on the host (whose os, unlike a board's, has getenv) VBOARD_CHIP, default esp32."""
    import os

    if hasattr(os, "getenv"):  # the host
        return os.getenv("VBOARD_CHIP") or "esp32"
    return os.uname()[4].split()[-1].lower()


def validate(raw, on=None):
    """A new dict of raw with defaults filled; ConfigError names the key and what is allowed. on: the chip
    (esp32, esp32s3, esp32c3) whose pins led_pin must fit; None: this board's."""
    if not isinstance(raw, dict):
        raise IotError("config must be a JSON object", "config")
    for k in raw:
        if k not in SPEC:
            raise IotError("unknown key %r; allowed keys: %s" % (k, ", ".join(SPEC)), "config")
    cfg = {}
    for k, (t, default) in SPEC.items():
        v = raw.get(k)
        if v is None:
            if k in ("product_key", "product_secret"):
                raise IotError(k + " is required", "config")
            v = default
        else:
            # The type letter as a number: a one-letter string in the code would be a qstr.
            c = ord(t)
            b = v is True or v is False
            if b != (c == 98) or not b and not isinstance(v, str if c == 115 else int):
                raise IotError("%s must be of type %s, got %s" % (k, {98: "bool", 105: "int", 115: "str"}[c],
                                                                  type(v).__name__), "config")
        cfg[k] = v
    # The watchdog must outlast the longest stretch that does not feed it: the session's waits feed it
    # every second; what blocks is one socket write or HTTPS operation (up to timeout), a DNS lookup
    # (lwIP's retries) and a TLS handshake's arithmetic (seconds): timeout + 15 s, at least 30 s. Unset:
    # 120 s; 0: off. Its range comes after timeout's, which it depends on.
    ranges = list(RANGES.items())
    wdt_lo = max(30, cfg["timeout"] + 15)
    if cfg["wdt_s"] is None:
        cfg["wdt_s"] = max(120, wdt_lo)
    elif cfg["wdt_s"]:
        ranges.append(("wdt_s", (wdt_lo, 3600)))
    for k, (lo, hi) in ranges:
        v = cfg[k]
        if v is not None and not lo <= v <= hi:
            raise IotError("%s must be an integer from %d to %d, got %d" % (k, lo, hi, v), "config")
    for k, allowed in CHOICES.items():
        if cfg[k] not in allowed:
            raise IotError("%s must be one of %s, got %r" % (k, ", ".join(allowed), cfg[k]), "config")
    for k in ("product_key", "product_secret"):
        if not cfg[k]:
            raise IotError(k + " must not be empty", "config")
    p = cfg["led_pin"]
    if p is not None:
        on = on or chip()
        # The GPIOs that can drive an LED, as (first, last) byte pairs, on every build of the chip's generic
        # firmware (ports/esp32/machine_pin.h and machine_pin.c, v1.23.0 to v1.28.0): esp32: 34-39 are
        # inputs only, 6-8, 11, 16, 17 hold the flash or SPIRAM (docs/esp32/quickref.rst), 24, 28-31 do not
        # exist; esp32s3: 22-32 do not exist, 33-37 hold the octal SPIRAM; esp32c3: 14-19 do not exist or
        # are the USB serial JTAG. One bytes object, "<chip>:" then its pairs, so that it costs no qstr
        # (bytes constants are not interned).
        pins = (b";esp32:\x00\x05\x09\x0a\x0c\x0f\x12\x17\x19\x1b\x20\x21;esp32s3:\x00\x15\x26\x30"
                b";esp32c3:\x00\x0d\x14\x15;")
        i = pins.find(b";" + on.encode() + b":")
        t = pins[i + len(on) + 2:pins.find(b";", i + 1)] if i >= 0 else b""
        r = range(0, len(t), 2)  # another chip: not checked here
        if t and not any(t[i] <= p <= t[i + 1] for i in r):
            raise IotError("led_pin %d is not an output of the %s: use %s" % (
                p, on, ", ".join(str(t[i]) + "-" + str(t[i + 1]) for i in r)), "config")
    dn = cfg["device_name"]
    if dn is not None and not valid_device_name(dn):
        raise IotError("device_name must be 4 to 32 characters of letters, digits and -_@.:", "config")
    return cfg


def load(path="config.json"):
    """Read and check the board's config file; host and port are resolved to the MQTT endpoint."""
    import os

    try:
        size = os.stat(path)[6]
    except OSError:
        raise IotError("%s not found on the board; provision it first" % path, "config_missing")
    if size > 4096:
        raise IotError("%s is larger than 4096 bytes" % path, "config")
    with open(path, "rb") as f:
        data = f.read(size)
    try:
        raw = json.loads(data)
    except ValueError:
        raise IotError("%s is not valid JSON" % path, "config")
    cfg = validate(raw)
    # The MQTT endpoint, resolved once: a connection uses host and port only.
    if not cfg["host"]:
        if cfg["instance_id"]:
            cfg["host"] = cfg["instance_id"] + ".mqtt.iothub.aliyuncs.com"
        else:
            cfg["host"] = "%s.iot-as-mqtt.%s.aliyuncs.com" % (cfg["product_key"], cfg["region"])
    cfg["port"] = cfg["port"] or (8883 if cfg["tls"] else 1883)
    return cfg


def valid_device_name(dn):
    """True if dn is a DeviceName the platform accepts (4 to 32 of letters, digits, -_@.:)."""
    # Bytes, not characters: on MicroPython each character taken out of a str is interned as a qstr, for good.
    return 4 <= len(dn) <= 32 and all(
        c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_@.:" for c in dn.encode())


def device_name_from_mac(buf):
    """A stable, valid DeviceName from the 6-byte base MAC (bytes buf)."""
    return (b"esp32-" + hexlify(buf)).decode()


def device_name(cfg):
    """The configured DeviceName, or one derived from the board's MAC."""
    if cfg["device_name"]:
        return cfg["device_name"]
    import machine

    return device_name_from_mac(machine.unique_id())
