"""The whole check of a config.json, run on the host before a file reaches a board (provision, cred).

The firmware checks what would break the device (aliyun_iot/config.py: unknown and required keys, types,
choices, ranges, the DeviceName) and nothing more, to keep its RAM. This adds, on top of exactly that check,
what the platform or the network would refuse later: character sets and lengths, and the regnwl region
rule. So a board never receives a config that its firmware would refuse.
"""

from tools.board import firmware_path

firmware_path()
from aliyun_iot import IotError  # noqa: E402
from aliyun_iot import config as device  # noqa: E402

KEYS = tuple(device.SPEC)
TYPES = {k: {"s": "str", "i": "int", "b": "bool"}[t] for k, (t, _d) in device.SPEC.items()}
valid_device_name = device.valid_device_name
device_name_from_mac = device.device_name_from_mac


def _is_alnum(c):
    return c.isascii() and c.isalnum()


def _chars(key, v, extra, lo, hi, what):
    if not lo <= len(v) <= hi or not all(_is_alnum(c) or c in extra for c in v):
        raise IotError("%s must be %d to %d characters of %s" % (key, lo, hi, what), "config")


def validate(raw, chip=None):
    """The firmware's own check, then the host's; returns the config with defaults. ConfigError names the
    key and what is allowed. chip: the board's (boards/*/board.json "chip"), whose pins led_pin must fit;
    None (the virtual board): esp32, as the machine shim's default."""
    cfg = device.validate(raw, chip or "esp32")
    _chars("product_key", cfg["product_key"], "", 1, 32, "letters and digits")
    ps = cfg["product_secret"]
    if not 1 <= len(ps) <= 64 or not all(" " < c <= "~" for c in ps):
        raise IotError("product_secret must be 1 to 64 printable ASCII characters", "config")
    _chars("region", cfg["region"], "-", 2, 32, "letters, digits and -")
    if cfg["instance_id"] is not None:
        _chars("instance_id", cfg["instance_id"], "-_", 1, 64, "letters, digits, - and _")
    for k in ("host", "auth_host"):
        if cfg[k] is not None:
            _chars(k, cfg[k], "-.", 1, 253, "letters, digits, - and . (a host name or IPv4 address)")
    if cfg["wifi_ssid"] is not None and not 1 <= len(cfg["wifi_ssid"]) <= 32:
        raise IotError("wifi_ssid must be 1 to 32 characters", "config")
    if len(cfg["wifi_password"]) > 64:
        raise IotError("wifi_password must be at most 64 characters", "config")
    if cfg["ca"] is not None and not 1 <= len(cfg["ca"]) <= 64:
        raise IotError("ca must be a file path of 1 to 64 characters", "config")
    if cfg["mode"] == "regnwl" and cfg["region"] != "cn-shanghai" and cfg["host"] is None:
        raise IotError("mode regnwl is offered only in region cn-shanghai (or set host for your instance)",
                       "config")
    return cfg
