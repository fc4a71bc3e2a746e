"""Write a board's config.json: from a local JSON file and/or flags, checked by the firmware's own rules.

Secrets never go on the command line: the ProductSecret comes from the config file, a file
(--product-secret-file), the environment (ALIYUN_PRODUCT_SECRET) or a prompt; the Wi-Fi password
likewise (--wifi-password-file, WIFI_PASSWORD, prompt). Output shows a secret's length and the first
4 hex digits of its sha256, never the secret.

    python -m tools.provision --port /dev/ttyUSB0 --config secrets/product.json
    python -m tools.provision --port /dev/ttyUSB0 --product-key a1B2c3 --product-secret-file secrets/ps \\
        --wifi-ssid lab --wifi-password-file secrets/wifi
    # production line: boards one after another, a manifest CSV of what was done (no secrets)
    python -m tools.provision --batch --port /dev/ttyUSB0 --config secrets/product.json --names names.csv
    python -m tools.provision --batch --ports /dev/ttyUSB0 /dev/ttyUSB1 --config secrets/product.json
"""

import csv
import getpass
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tools import board as B

TOOL = "provision"
SECRET_KEYS = ("product_secret", "wifi_password")
MANIFEST_FIELDS = ("port", "mac", "device_name", "result", "time")
DEFAULT_MANIFEST = "provision-manifest.csv"
# flag -> config key, for the flags that map one to one
_FLAG_KEYS = {
    "product_key": "product_key",
    "device_name": "device_name",
    "region": "region",
    "instance_id": "instance_id",
    "mode": "mode",
    "sign_method": "sign_method",
    "host": "host",
    "mqtt_port": "port",
    "auth_host": "auth_host",
    "auth_port": "auth_port",
    "wifi_ssid": "wifi_ssid",
    "ca": "ca",
    "keepalive": "keepalive",
    "led_pin": "led_pin",
    "timeout": "timeout",
    "attempts": "attempts",
}


# ---------------------------------------------------------------- building the config


def _warn_if_readable(path):
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077:
        B.say(TOOL, "warning: %s holds a secret and is readable by others (chmod 600 it)" % path)


def read_secret_file(path):
    _warn_if_readable(path)
    try:
        with open(path) as f:
            return f.read().rstrip("\r\n")
    except OSError as e:
        raise B.ToolError("cannot read secret file %s: %s" % (path, e.strerror)) from None


def _secret(raw, key, path, env, what, required):
    if raw.get(key) is not None:
        return
    if path:
        raw[key] = read_secret_file(path)
    elif os.environ.get(env):
        raw[key] = os.environ[env]
    elif required and sys.stdin.isatty():
        raw[key] = getpass.getpass("%s (not echoed): " % what)
    elif required:
        raise B.ToolError("no %s: give --%s-file or set %s" % (what, key.replace("_", "-"), env))


def build_raw(a, settings):
    """The config dict to write: the --config file, then flags, then the board's LED pin as a default."""
    raw = {}
    if a.config:
        _warn_if_readable(a.config)
        try:
            raw = json.loads(Path(a.config).read_text())
        except OSError as e:
            raise B.ToolError("cannot read %s: %s" % (a.config, e.strerror)) from None
        except ValueError as e:
            raise B.ToolError("%s is not valid JSON: %s" % (a.config, e)) from None
        if not isinstance(raw, dict):
            raise B.ToolError("%s must hold a JSON object" % a.config)
    for flag, key in _FLAG_KEYS.items():
        v = getattr(a, flag)
        if v is not None:
            raw[key] = v
    if a.no_ntp:
        raw["ntp"] = False
    if raw.get("led_pin") is None and settings["led_pin"] is not None:
        raw["led_pin"] = settings["led_pin"]
    _secret(raw, "product_secret", a.product_secret_file, "ALIYUN_PRODUCT_SECRET", "ProductSecret", True)
    _secret(
        raw,
        "wifi_password",
        a.wifi_password_file,
        "WIFI_PASSWORD",
        "Wi-Fi password",
        raw.get("wifi_ssid") is not None,
    )
    return raw


def validate(raw):
    """The firmware's validation (aliyun_iot.config.validate) on CPython; ToolError naming the key."""
    config, _, errors = B.firmware_modules()
    try:
        return config.validate(raw)
    except errors.ConfigError as e:
        raise B.ToolError("invalid config: %s" % e.msg) from None


def summary(raw, dn=None):
    """'key=value ...' of what is written, secrets as fingerprints."""
    items = []
    for k in sorted(raw):
        v = raw[k]
        if k in SECRET_KEYS:
            items.append("%s=<%s>" % (k, B.fingerprint(v)))
        else:
            items.append("%s=%s" % (k, json.dumps(v)))
    if dn and "device_name" not in raw:
        items.append("device_name=%s (derived from the MAC)" % json.dumps(dn))
    return " ".join(items)


# ---------------------------------------------------------------- one board


def read_names(path):
    """{mac (12 lowercase hex): DeviceName} from a CSV with columns mac,device_name."""
    config, _, _ = B.firmware_modules()
    names = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise B.ToolError("cannot read %s: %s" % (path, e.strerror)) from None
    for i, row in enumerate(rows, start=2):
        mac = re.sub(r"[:\-]", "", (row.get("mac") or "").strip()).lower()
        dn = (row.get("device_name") or "").strip()
        if not re.fullmatch(r"[0-9a-f]{12}", mac):
            raise B.ToolError("%s line %d: mac must be 12 hex digits (columns: mac,device_name)" % (path, i))
        if not config.valid_device_name(dn):
            raise B.ToolError("%s line %d: device_name %r is not a valid DeviceName" % (path, i, dn))
        if mac in names or dn in names.values():
            raise B.ToolError("%s line %d: mac or device_name listed twice" % (path, i))
        names[mac] = dn
    return names


def device_name_for(raw, mac, names):
    """(DeviceName, written to config?) for the board with this MAC."""
    config, _, _ = B.firmware_modules()
    if names is not None:
        if mac not in names:
            raise B.ToolError("MAC %s is not in the names CSV" % mac)
        return names[mac], True
    if raw.get("device_name"):
        return raw["device_name"], True
    return config.device_name_from_mac(bytes.fromhex(mac)), False


def check_credential(board, pk, dn, force, files=None):
    """Refuse a board whose stored credential is for another device: rewriting it would orphan that one."""
    _, cred, problem = B.read_credential(board, files)
    if problem and not force:
        raise B.ToolError(
            "the board's stored credential is corrupt (%s); pass --force to provision anyway" % problem
        )
    if cred and (cred["pk"], cred["dn"]) != (pk, dn) and not force:
        raise B.ToolError(
            "the board holds the credential of %s/%s; provisioning it as %s/%s would orphan that device: "
            "back it up (python -m tools.cred backup) and pass --force" % (cred["pk"], cred["dn"], pk, dn)
        )
    return cred


def write_config(board, cfg_bytes):
    """Write config.json through a private temp file, atomically on the board, and check it by sha256."""
    tmpdir = tempfile.mkdtemp(prefix="aliyun-iot-prov-")  # mode 0700
    try:
        local = B.write_private(Path(tmpdir) / "config.json", cfg_bytes)
        got = board.put(local, B.CONFIG_PATH)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if got != hashlib.sha256(cfg_bytes).hexdigest():
        raise B.ToolError("config.json read back from the board differs from what was written")


def provision_board(board, raw, names=None, force=False):
    """Provision one board; returns (mac, DeviceName). Raises ToolError."""
    files = board.read_files([B.CRED_PATH])  # one round trip: the MAC and the stored credential
    mac = board.mac()
    dn, explicit = device_name_for(raw, mac, names)
    raw = dict(raw)
    if explicit:
        raw["device_name"] = dn
    cfg = validate(raw)
    old = check_credential(board, cfg["product_key"], dn, force, files)
    write_config(board, json.dumps(raw, sort_keys=True).encode() + b"\n")
    B.say(TOOL, "%s: mac %s: config.json written: %s" % (board.port, mac, summary(raw, dn)))
    if old and (old["pk"], old["dn"]) != (cfg["product_key"], dn):
        B.say(TOOL, "%s: warning: its stored credential is for %s/%s: it will not boot (code=mismatch) until "
              "that credential is removed" % (board.port, old["pk"], old["dn"]))  # fmt: skip
    elif old:
        B.say(TOOL, "%s: keeps its stored credential %s" % (board.port, B.describe_cred(old)))
    return mac, dn


# ---------------------------------------------------------------- batch


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """The production-line record: one CSV row per board, flushed at once (no secrets in it)."""

    def __init__(self, path):
        self.path = Path(path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.f = self.path.open("a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=MANIFEST_FIELDS)
        if new:
            self.w.writeheader()
            self.f.flush()

    def add(self, port, mac, dn, result):
        self.w.writerow(
            {"port": port, "mac": mac or "", "device_name": dn or "", "result": result, "time": _now()}
        )
        self.f.flush()

    def close(self):
        self.f.close()


def wait_for_board(port, seen, wait_s, poll_s=1.0, board_cls=None):
    """Poll port until a board answers with a MAC not in seen: (Board, mac). ToolError after wait_s."""
    deadline = time.monotonic() + wait_s
    B.say(TOOL, "waiting for the next board on %s (Ctrl-C to stop)" % port)
    while True:
        board = (board_cls or B.Board)(port, TOOL, timeout=10)
        try:
            mac = board.mac()
        except B.ToolError:
            mac = None
        if mac and mac not in seen:
            return board, mac
        if time.monotonic() > deadline:
            raise B.ToolError("no new board on %s within %d s" % (port, wait_s))
        time.sleep(poll_s)


def batch(a, raw, names):
    """Provision boards one after another; a board that fails is recorded and the batch goes on."""
    manifest = Manifest(a.manifest)
    ok = failed = 0
    seen = set()
    t0 = time.monotonic()
    try:
        n = 0
        while True:
            if a.ports:
                if n >= len(a.ports):
                    break
                port = a.ports[n]
                board = B.Board(port, TOOL)
            else:
                if a.count and n >= a.count:
                    break
                port = a.port
                board, _ = wait_for_board(port, seen, a.wait)
            n += 1
            mac = dn = None
            try:
                mac, dn = provision_board(board, raw, names, a.force)
            except B.ToolError as e:
                failed += 1
                manifest.add(port, mac, dn, "failed: %s" % e)
                B.say(TOOL, "board %d on %s FAILED: %s" % (n, port, e))
            else:
                ok += 1
                manifest.add(port, mac, dn, "ok")
            if mac:
                seen.add(mac)
    except KeyboardInterrupt:
        B.say(TOOL, "batch stopped by Ctrl-C")
    finally:
        manifest.close()
    print(
        "batch: %d boards provisioned, %d failed, in %.1f s; manifest %s"
        % (ok, failed, time.monotonic() - t0, a.manifest)
    )
    if failed:
        raise B.ToolError("%d of %d boards failed; see %s" % (failed, ok + failed, a.manifest))
    return 0


# ---------------------------------------------------------------- command line


def parse_args(argv):
    ap = B.parser("provision", __doc__)
    ap.add_argument("--board", default=B.DEFAULT_BOARD, help="board name under boards/ (default %(default)s)")
    ap.add_argument("--port", "-p", help="serial port or socket:// URL of the board")
    ap.add_argument("--config", help="a local config JSON (keep it in secrets/, mode 0600)")
    g = ap.add_argument_group("config keys (override the --config file)")
    g.add_argument("--product-key")
    g.add_argument(
        "--product-secret-file", help="file holding the ProductSecret (else $ALIYUN_PRODUCT_SECRET)"
    )
    g.add_argument("--device-name", help="default: derived from the MAC, esp32-<12 hex>")
    g.add_argument("--region")
    g.add_argument("--instance-id")
    g.add_argument("--mode", help="register (default), regnwl or https")
    g.add_argument("--sign-method", help="hmacsha256 (default), hmacsha1 or hmacmd5")
    g.add_argument("--host", help="MQTT endpoint host override")
    g.add_argument("--mqtt-port", type=int, help="MQTT endpoint port override (config key port)")
    g.add_argument("--auth-host", help="HTTPS registration host override")
    g.add_argument("--auth-port", type=int)
    g.add_argument("--wifi-ssid")
    g.add_argument("--wifi-password-file", help="file holding the Wi-Fi password (else $WIFI_PASSWORD)")
    g.add_argument(
        "--ca", help="path ON THE BOARD of a CA file replacing the built-in roots (deploy --ca copies it)"
    )
    g.add_argument("--keepalive", type=int)
    g.add_argument("--led-pin", type=int, help="status LED GPIO (default: the board's)")
    g.add_argument("--timeout", type=int)
    g.add_argument("--attempts", type=int)
    g.add_argument("--no-ntp", action="store_true", help="do not set the clock with NTP")
    b = ap.add_argument_group("batch (production line)")
    b.add_argument("--batch", action="store_true", help="provision boards one after another")
    b.add_argument(
        "--ports", nargs="+", help="the boards' ports, one board each (else: boards in turn on --port)"
    )
    b.add_argument("--count", type=int, default=0, help="with --port: stop after N boards (default: Ctrl-C)")
    b.add_argument("--wait", type=int, default=600, help="seconds to wait for the next board (%(default)s)")
    b.add_argument("--names", help="CSV with columns mac,device_name (else names derive from the MAC)")
    b.add_argument("--manifest", default=DEFAULT_MANIFEST, help="CSV appended per board (%(default)s)")
    ap.add_argument(
        "--force", action="store_true", help="replace a config whose board holds another device's credential"
    )
    ap.add_argument("--dry-run", action="store_true", help="validate and print the summary; touch no board")
    a = ap.parse_args(argv)
    if not a.dry_run and not a.port and not a.ports:
        ap.error("give --port (or --batch --ports ...)")
    if a.ports and not a.batch:
        ap.error("--ports is for --batch")
    return a


def main(argv=None):
    a = parse_args(argv)
    settings = B.load_board(a.board)
    raw = build_raw(a, settings)
    names = read_names(a.names) if a.names else None
    validate(raw)  # fail before touching any board
    if a.batch and raw.get("device_name"):
        raise B.ToolError(
            "a batch cannot give every board one device_name: use --names CSV or MAC-derived names"
        )
    if a.dry_run:
        print("config: %s" % summary(raw))
        return 0
    if a.batch:
        return batch(a, raw, names)
    mac, dn = provision_board(B.Board(a.port, TOOL), raw, names, a.force)
    print("provisioned %s: mac %s device_name %s" % (a.port, mac, dn))
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
