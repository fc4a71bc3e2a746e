# config.json: loaded and fully validated before the network is touched.
# Host tools import this same module so a board never receives a config the
# firmware would refuse.
import json

from aliyun_iot.errors import ConfigError

_MAX_FILE = 4096
_DN_CHARS = "-_@.:"
MODES = ("register", "regnwl", "https")
SIGN_METHODS = ("hmacsha256", "hmacsha1", "hmacmd5")

# (key, type, required, default), in the order messages list them.
_SCHEMA = (
    ("product_key", "str", True, None),
    ("product_secret", "str", True, None),
    ("device_name", "str", False, None),
    ("region", "str", False, "cn-shanghai"),
    ("instance_id", "str", False, None),
    ("host", "str", False, None),
    ("port", "int", False, None),
    ("auth_host", "str", False, None),
    ("auth_port", "int", False, None),
    ("mode", "str", False, "register"),
    ("sign_method", "str", False, "hmacsha256"),
    ("wifi_ssid", "str", False, None),
    ("wifi_password", "str", False, ""),
    ("ca", "str", False, None),
    ("tls", "bool", False, True),
    ("keepalive", "int", False, 300),
    ("led_pin", "int", False, None),
    ("ntp", "bool", False, True),
    ("timeout", "int", False, 10),
    ("attempts", "int", False, 5),
    ("backoff_ms", "int", False, 1000),
    ("retry_cap_s", "int", False, 60),
    ("refused_cap_s", "int", False, 3600),
    ("wdt_s", "int", False, None),
)
KEYS = tuple(k[0] for k in _SCHEMA)


def _is_alnum(c):
    return ("0" <= c <= "9") or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _chars(key, v, extra, lo, hi, what):
    if not lo <= len(v) <= hi or not all(_is_alnum(c) or c in extra for c in v):
        raise ConfigError("%s must be %d to %d characters of %s" % (key, lo, hi, what))


def _range(key, v, lo, hi):
    if not lo <= v <= hi:
        raise ConfigError("%s must be an integer from %d to %d, got %d" % (key, lo, hi, v))


def _one_of(key, v, allowed):
    if v not in allowed:
        raise ConfigError("%s must be one of %s, got %r" % (key, ", ".join(allowed), v))


def valid_device_name(dn):
    """True if dn is a DeviceName the platform accepts (4 to 32 of letters, digits, -_@.:)."""
    return 4 <= len(dn) <= 32 and all(_is_alnum(c) or c in _DN_CHARS for c in dn)


def device_name_from_mac(mac):
    """A stable, valid DeviceName from the 6-byte base MAC."""
    return "esp32-" + "".join("%02x" % b for b in mac)


def validate(raw):
    """Check a config dict; return a new dict with defaults filled. Raises ConfigError naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError("config must be a JSON object")
    for k in raw:
        if k not in KEYS:
            raise ConfigError("unknown key %r; allowed keys: %s" % (k, ", ".join(KEYS)))
    cfg = {}
    for k, typ, required, default in _SCHEMA:
        v = raw.get(k)
        if v is None:
            if required:
                raise ConfigError("%s is required" % k)
            cfg[k] = default
            continue
        if typ == "bool":
            ok = v is True or v is False
        elif typ == "int":
            ok = isinstance(v, int) and v is not True and v is not False
        else:
            ok = isinstance(v, str)
        if not ok:
            raise ConfigError("%s must be of type %s, got %s" % (k, typ, type(v).__name__))
        cfg[k] = v
    _chars("product_key", cfg["product_key"], "", 1, 32, "letters and digits")
    ps = cfg["product_secret"]
    if not 1 <= len(ps) <= 64 or not all(" " < c <= "~" for c in ps):
        raise ConfigError("product_secret must be 1 to 64 printable ASCII characters")
    if cfg["device_name"] is not None and not valid_device_name(cfg["device_name"]):
        raise ConfigError("device_name must be 4 to 32 characters of letters, digits and -_@.:")
    _chars("region", cfg["region"], "-", 2, 32, "letters, digits and -")
    if cfg["instance_id"] is not None:
        _chars("instance_id", cfg["instance_id"], "-_", 1, 64, "letters, digits, - and _")
    for k in ("host", "auth_host"):
        if cfg[k] is not None:
            _chars(k, cfg[k], "-.", 1, 253, "letters, digits, - and . (a host name or IPv4 address)")
    for k in ("port", "auth_port"):
        if cfg[k] is not None:
            _range(k, cfg[k], 1, 65535)
    _one_of("mode", cfg["mode"], MODES)
    _one_of("sign_method", cfg["sign_method"], SIGN_METHODS)
    if cfg["wifi_ssid"] is not None and not 1 <= len(cfg["wifi_ssid"]) <= 32:
        raise ConfigError("wifi_ssid must be 1 to 32 characters")
    if len(cfg["wifi_password"]) > 64:
        raise ConfigError("wifi_password must be at most 64 characters")
    if cfg["ca"] is not None and not 1 <= len(cfg["ca"]) <= 64:
        raise ConfigError("ca must be a file path of 1 to 64 characters")
    _range("keepalive", cfg["keepalive"], 30, 1200)
    if cfg["led_pin"] is not None:
        _range("led_pin", cfg["led_pin"], 0, 48)
    _range("timeout", cfg["timeout"], 1, 120)
    _range("attempts", cfg["attempts"], 1, 20)
    _range("backoff_ms", cfg["backoff_ms"], 100, 600000)
    _range("retry_cap_s", cfg["retry_cap_s"], 1, 3600)
    _range("refused_cap_s", cfg["refused_cap_s"], 1, 86400)
    # The watchdog must outlast the longest wait of a connection attempt (DNS, TCP, TLS, CONNACK:
    # about 4 timeouts); unset: 120 s or 6 timeouts; 0: off.
    lo = max(30, 6 * cfg["timeout"])
    if cfg["wdt_s"] is None:
        cfg["wdt_s"] = max(120, lo)
    elif cfg["wdt_s"]:
        _range("wdt_s", cfg["wdt_s"], lo, 3600)
    if cfg["mode"] == "regnwl" and cfg["region"] != "cn-shanghai" and cfg["host"] is None:
        raise ConfigError("mode regnwl is offered only in region cn-shanghai (or set host for your instance)")
    return cfg


def load(path="config.json"):
    """Read and validate the board's config file."""
    import os

    try:
        size = os.stat(path)[6]
    except OSError:
        raise ConfigError("%s not found on the board; provision it first" % path, "config_missing")
    if size > _MAX_FILE:
        raise ConfigError("%s is larger than %d bytes" % (path, _MAX_FILE))
    with open(path, "rb") as f:
        data = f.read(size)
    try:
        raw = json.loads(data)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    return validate(raw)


def device_name(cfg):
    """The configured DeviceName, or one derived from the board's MAC."""
    if cfg["device_name"]:
        return cfg["device_name"]
    import machine

    return device_name_from_mac(machine.unique_id())
