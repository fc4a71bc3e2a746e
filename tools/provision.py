"""Write a board's config.json: from a local JSON file and/or flags, checked by the firmware's own rules.

Secrets never go on the command line: the ProductSecret comes from the config file, a file
(--product-secret-file), the environment (ALIYUN_PRODUCT_SECRET) or a prompt; the Wi-Fi password
likewise (--wifi-password-file, WIFI_PASSWORD, prompt). Output shows a secret's length and the first
4 hex digits of its sha256, never the secret.

Every file the config names (`ca`) must be on the board: `--ca LOCAL_FILE` puts it there (at ca.der,
the config's ca set to it); a config naming a file the board lacks is refused.

    python -m tools.provision --port /dev/ttyUSB0 --config secrets/product.json
    python -m tools.provision --port /dev/ttyUSB0 --config secrets/product.json --ca emulator-state/ca.der
    python -m tools.provision --port /dev/ttyUSB0 --product-key a1B2c3 --product-secret-file secrets/ps \\
        --wifi-ssid lab --wifi-password-file secrets/wifi
    # production line: boards one after another, a manifest CSV of what was done (no secrets)
    python -m tools.provision --batch --port /dev/ttyUSB0 --config secrets/product.json --names names.csv
    python -m tools.provision --batch --ports /dev/ttyUSB0 /dev/ttyUSB1 --config secrets/product.json
"""

import csv
import getpass
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import threading
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
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as e:
        raise B.ToolError("cannot read secret file %s: %s" % (path, e.strerror)) from None
    except ValueError:
        raise B.ToolError("secret file %s is not UTF-8 text" % path) from None


def _secret(raw, key, path, env, what, required):
    # A file given on the command line wins over the --config file (the help says flags override it);
    # the config file wins over the environment; a prompt comes last.
    flag = "--%s-file" % key.replace("_", "-")
    if path:
        if raw.get(key) is not None:
            B.say(TOOL, "%s from %s, not from the --config file" % (what, flag))
        raw[key] = read_secret_file(path)
    elif raw.get(key) is not None:
        return
    elif os.environ.get(env):
        raw[key] = os.environ[env]
    elif required and sys.stdin.isatty():
        raw[key] = getpass.getpass("%s (not echoed): " % what)
    elif required:
        raise B.ToolError("no %s: give %s or set %s" % (what, flag, env))


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


def validate(raw, chip=None):
    """The firmware's own check with the host's on top (tools.config_schema); ToolError naming the key.
    chip: the BOARD's, whose pins led_pin must fit."""
    config, _, pkg = B.firmware_modules()
    try:
        return config.validate(raw, chip)
    except pkg.IotError as e:
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


_NAME_HEADERS = {("mac", "device_name"), ("mac", "devicename"), ("mac", "device name")}


def read_names(path):
    """{mac (12 lowercase hex): DeviceName} from a UTF-8 CSV (a BOM is fine) with the columns mac,device_name;
    the header line `mac,device_name` is optional."""
    config, _, _ = B.firmware_modules()
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise B.ToolError("cannot read names CSV %s: %s" % (path, e.strerror)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise B.ToolError(
            "names CSV %s line %d: not UTF-8 text (save it as CSV UTF-8)" % (path, line)
        ) from None
    try:
        rows = [
            (i, r)
            for i, r in enumerate(csv.reader(io.StringIO(text, newline="")), 1)
            if any(c.strip() for c in r)
        ]
    except csv.Error as e:
        raise B.ToolError("names CSV %s: %s" % (path, e)) from None
    if rows and tuple(c.strip().lower() for c in rows[0][1][:2]) in _NAME_HEADERS:
        rows = rows[1:]
    elif rows and not re.fullmatch(r"[0-9a-f]{12}", re.sub(r"[:\-]", "", rows[0][1][0].strip().lower())):
        raise B.ToolError(
            "names CSV %s line %d: want the header mac,device_name or a MAC" % (path, rows[0][0])
        )
    if not rows:
        raise B.ToolError("names CSV %s lists no board (columns: mac,device_name)" % path)
    names = {}
    for i, row in rows:
        mac = re.sub(r"[:\-]", "", row[0].strip()).lower()
        dn = row[1].strip() if len(row) > 1 else ""
        if not re.fullmatch(r"[0-9a-f]{12}", mac):
            raise B.ToolError(
                "names CSV %s line %d: mac must be 12 hex digits (columns: mac,device_name)" % (path, i)
            )
        if not config.valid_device_name(dn):
            raise B.ToolError(
                "names CSV %s line %d: device_name %r is not a valid DeviceName" % (path, i, dn)
            )
        if mac in names or dn in names.values():
            raise B.ToolError("names CSV %s line %d: mac or device_name listed twice" % (path, i))
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


def check_board_files(board, raw, files, ca_local=None):
    """Every file the config names (its `ca`) must be on the board: ca_local (a local file) is put there
    (temp file, rename, sha256 compared), else a file the board lacks is refused: the board would stop at
    its first boot with code=config and sleep for the long cap."""
    path = raw.get("ca")
    if not path:
        return
    if ca_local is not None:
        data = Path(ca_local).read_bytes()
        if files.get(path) == data:
            return
        if board.put(ca_local, path) != hashlib.sha256(data).hexdigest():
            raise B.ToolError("%s read back from the board differs from %s" % (path, ca_local))
        B.say(TOOL, "%s: %s put at %s (%d bytes, sha256 checked)" % (board.port, ca_local, path, len(data)))
        return
    if files.get(path) is None:
        raise B.ToolError(
            "the config names ca %s, which the board does not hold: it would stop at its first boot "
            "(code=config); put it there with --ca LOCAL_FILE (or make deploy CA=LOCAL_FILE), or drop the "
            "ca key to trust the built-in roots" % path
        )


def provision_board(board, raw, names=None, force=False, info=None, ca_local=None):
    """Provision one board; returns (mac, DeviceName). Raises ToolError. info (a dict) gets "mac" and "dn"
    as soon as they are known, so that a failure can still be recorded with them. ca_local: a local CA
    file to put on the board where the config's `ca` points."""
    info = {} if info is None else info
    named = [raw["ca"]] if isinstance(raw.get("ca"), str) and raw["ca"] else []
    files = board.read_files([B.CRED_PATH, *named])  # one round trip: the MAC, the credential, the CA
    mac = info["mac"] = board.mac()
    dn, explicit = device_name_for(raw, mac, names)
    info["dn"] = dn
    raw = dict(raw)
    if explicit:
        raw["device_name"] = dn
    cfg = validate(raw)
    old = check_credential(board, cfg["product_key"], dn, force, files)
    check_board_files(board, raw, files, ca_local)
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


def is_done(result):
    """A manifest result that means the board needs nothing more: "ok", "ok: <how>", "done: <why>"."""
    return result == "ok" or result.startswith(("ok: ", "done: "))


class Manifest:
    """The production-line record: one CSV row per board (no secrets in it). Each row goes to the file in
    one write on an O_APPEND descriptor, then fsync: rows from parallel workers never interleave, and a
    row is either whole or absent. done: the MACs with an "ok" row, so that a re-run skips them."""

    def __init__(self, path, fields=MANIFEST_FIELDS):
        self.path = Path(path)
        self.fields = tuple(fields)
        self.done = set()
        self.lock = threading.Lock()
        check_output_file(self.path, "manifest")
        new = True
        if self.path.exists():
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as e:
                raise B.ToolError("cannot read manifest %s: %s" % (self.path, e.strerror)) from None
            except ValueError:
                raise B.ToolError(
                    "manifest %s is not a CSV this tool wrote (not UTF-8)" % self.path
                ) from None
            new = not text.strip()
            if not new:
                self._load(text)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise B.ToolError("cannot write manifest %s: %s" % (self.path, e.strerror)) from None
        if new:
            self._write(self.fields)
        elif not text.endswith("\n"):
            os.write(self.fd, b"\n")  # a torn last line stays alone, ignored by the next run

    def _load(self, text):
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if tuple(rows[0]) != self.fields:
            raise B.ToolError(
                "manifest %s has the columns %s, this tool writes %s: give another --manifest"
                % (self.path, ",".join(rows[0])[:80], ",".join(self.fields))
            )
        for row in rows[1:]:
            if len(row) == len(self.fields):
                r = dict(zip(self.fields, row, strict=True))
                if is_done(r["result"]) and r["mac"]:
                    self.done.add(r["mac"])

    def _write(self, values):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        with self.lock:
            os.write(self.fd, buf.getvalue().encode())
            os.fsync(self.fd)

    def add(self, port=None, mac=None, dn=None, result=None, **more):
        """Append one row (port, MAC, DeviceName, result, time, and any more of this manifest's columns)."""
        row = {"port": port, "mac": mac, "device_name": dn, "result": result, "time": _now(), **more}
        result = (row["result"] or "").replace("\n", " ")
        row["result"] = result
        self._write(["" if row.get(k) is None else str(row[k]) for k in self.fields])
        if is_done(result) and mac:
            with self.lock:
                self.done.add(mac)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_output_file(path, what):
    """ToolError (one line) unless path can be a file we create or append to."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not path.name:
        raise B.ToolError("%s %s is a folder: give a file name, e.g. %s/line1.csv" % (what, path, path))
    if not parent.is_dir():
        why = "is not a folder" if parent.exists() else "does not exist"
        raise B.ToolError("%s %s: the folder %s %s" % (what, path, parent, why))


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
    """Provision boards one after another; a board that fails is recorded (with its MAC and DeviceName
    when known) and the batch goes on. Boards the manifest already records as ok are skipped."""
    manifest = Manifest(a.manifest)
    ok = failed = skipped = 0
    seen = set(manifest.done)  # a board is tried once per run: a failed one is not retried in a loop
    t0 = time.monotonic()
    try:
        n = 0
        while True:
            info = {}
            if a.ports:
                if n >= len(a.ports):
                    break
                port = a.ports[n]
                board = B.Board(port, TOOL)
                n += 1
                try:
                    info["mac"] = board.mac()
                except B.ToolError as e:
                    failed += 1
                    manifest.add(port, None, None, "failed: %s" % e)
                    B.say(TOOL, "board %d on %s FAILED: %s" % (n, port, e))
                    continue
                if info["mac"] in seen:
                    skipped += 1
                    why = "already done (manifest)" if info["mac"] in manifest.done else "already tried"
                    B.say(TOOL, "board %d on %s: mac %s %s: skipped" % (n, port, info["mac"], why))
                    continue
            else:
                if a.count and n >= a.count:
                    break
                port = a.port
                board, info["mac"] = wait_for_board(port, seen, a.wait)
                n += 1
            seen.add(info["mac"])
            try:
                provision_board(board, raw, names, a.force, info, getattr(a, "ca_local", None))
            except B.ToolError as e:
                failed += 1
                manifest.add(port, info.get("mac"), info.get("dn"), "failed: %s" % e)
                B.say(TOOL, "board %d on %s FAILED: %s" % (n, port, e))
            else:
                ok += 1
                manifest.add(port, info["mac"], info["dn"], "ok")
    except KeyboardInterrupt:
        B.say(TOOL, "batch stopped by Ctrl-C")
    finally:
        manifest.close()
    print(
        "batch: %d boards provisioned, %d failed, %d already done, in %.1f s; manifest %s"
        % (ok, failed, skipped, time.monotonic() - t0, a.manifest)
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
        "--ca",
        help="a local CA file replacing the built-in roots: put on the board at %s (config key ca set to "
        "it); or a path ON THE BOARD of one already there (deploy --ca puts it at %s)"
        % (B.CA_PATH, B.CA_PATH),
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
    a.ca_local = None
    if a.ca and Path(a.ca).is_file():  # a local file: it goes to the board's CA_PATH
        a.ca_local, a.ca = a.ca, B.CA_PATH
    raw = build_raw(a, settings)
    names = read_names(a.names) if a.names else None
    validate(raw, settings["chip"])  # fail before touching any board
    if a.batch:
        check_output_file(a.manifest, "manifest")
    if a.batch and raw.get("device_name"):
        raise B.ToolError(
            "a batch cannot give every board one device_name: use --names CSV or MAC-derived names"
        )
    if a.dry_run:
        print("config: %s" % summary(raw))
        return 0
    if a.batch:
        return batch(a, raw, names)
    mac, dn = provision_board(B.Board(a.port, TOOL), raw, names, a.force, ca_local=a.ca_local)
    print("provisioned %s: mac %s device_name %s" % (a.port, mac, dn))
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
