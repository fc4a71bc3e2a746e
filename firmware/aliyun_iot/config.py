# config.json: read, defaults filled in, and checked for whatever would break
# the device: unknown keys (a typo never falls back to a default), required
# keys, types, choices and ranges. Character sets and lengths are checked on
# the host before a file reaches a board (tools/config_schema.py, which
# provision runs on top of this). Imported for the boot's first step, then
# dropped.
import json

from aliyun_iot import IotError

_MAX_FILE = 4096  # no const(): the host tools import this module on CPython
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
}
CHOICES = {"mode": ("register", "regnwl", "https"), "sign_method": ("hmacsha256", "hmacsha1", "hmacmd5")}
_TYPES = {"s": "str", "i": "int", "b": "bool"}
_DN_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_@.:"


def validate(raw):
    """A new dict of raw with defaults filled; ConfigError names the key and what is allowed."""
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
            b = v is True or v is False
            if b != (t == "b") or not b and not isinstance(v, str if t == "s" else int):
                raise IotError("%s must be of type %s, got %s" % (k, _TYPES[t], type(v).__name__), "config")
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
    if size > _MAX_FILE:
        raise IotError("%s is larger than %d bytes" % (path, _MAX_FILE), "config")
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
    return 4 <= len(dn) <= 32 and all(c in _DN_CHARS for c in dn.encode())


def device_name_from_mac(mac):
    """A stable, valid DeviceName from the 6-byte base MAC."""
    return "esp32-" + "".join("%02x" % b for b in mac)


def device_name(cfg):
    """The configured DeviceName, or one derived from the board's MAC."""
    if cfg["device_name"]:
        return cfg["device_name"]
    import machine

    return device_name_from_mac(machine.unique_id())
