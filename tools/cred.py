"""The board's stored credential (aliyun_iot.cred): status, backup to a 0600 file, restore.

An activated device whose DeviceSecret is lost is locked out until ResetThing: back it up before
erasing or reflashing. Nothing here prints a secret: a length and the first 4 hex of its sha256.

    python -m tools.cred status  --port /dev/ttyUSB0
    python -m tools.cred backup  --port /dev/ttyUSB0 [--dir backups]
    python -m tools.cred restore --port /dev/ttyUSB0 backups/<pk>.<dn>.<mac>.cred [--force]
"""

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

from tools import board as B

TOOL = "cred"
DEFAULT_DIR = B.REPO / "backups"


def _decode(raw, where):
    _, store, pkg = B.firmware_modules()
    try:
        return store.decode(raw)
    except pkg.IotError as e:
        raise B.ToolError("%s: %s; refusing to use it" % (where, e.msg)) from None


_PK_RE = re.compile(r"[A-Za-z0-9]{1,32}")
_MAC_RE = re.compile(r"[0-9a-f]{12}")
_STAMP_RE = re.compile(r"\d{8}T\d{6}(-\d+)?")


def backup_name(cred, mac):
    """<pk>.<dn>.<mac>.cred, or None when pk/dn read from the board are not valid names (a file name
    built from them could leave the backups folder)."""
    config, _, _ = B.firmware_modules()
    pk, dn = cred.get("pk"), cred.get("dn")
    if not (isinstance(pk, str) and _PK_RE.fullmatch(pk)) or not (
        isinstance(dn, str) and config.valid_device_name(dn)
    ):
        return None
    return "%s.%s.%s.cred" % (pk, dn.replace(":", "_").replace("@", "_"), mac)


def mac_of_backup(path):
    """The MAC a backup file name records (<...>.<mac>[.<time>].cred), or None."""
    parts = Path(path).name.split(".")
    if len(parts) < 2 or parts[-1] != "cred":
        return None
    parts = parts[:-1]
    if parts and _STAMP_RE.fullmatch(parts[-1]):
        parts = parts[:-1]
    return parts[-1] if parts and _MAC_RE.fullmatch(parts[-1]) else None


def backup_dir(out_dir):
    """out_dir, created (mode 0700) if missing; ToolError if it is a file or cannot be made."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise B.ToolError("backups folder %s is a file: give a folder with --dir" % out_dir)
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise B.ToolError("cannot create backups folder %s: %s" % (out_dir, e.strerror)) from None
    return out_dir


def _stamped(out_dir, stem):
    """stem.<time>.cred, or stem.<time>-<n>.cred: a name not yet taken in out_dir."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name, n = "%s.%s.cred" % (stem, stamp), 1
    while (out_dir / name).exists():
        n += 1
        name = "%s.%s-%d.cred" % (stem, stamp, n)
    return name


def backup(board, out_dir):
    """Save the board's credential in out_dir (mode 0600); returns the path. An identical backup is reused.
    A corrupt credential, or one whose pk/dn are not valid names, is saved as it is (raw) under
    <corrupt|badname>.<mac>.<time>.cred: it may be the only copy there is."""
    out_dir = backup_dir(out_dir)
    raw = board.read_files([B.CRED_PATH])[B.CRED_PATH]
    if raw is None:
        raise B.ToolError("no stored credential on %s: nothing to back up" % board.port)
    mac = board.mac()
    _, store, pkg = B.firmware_modules()
    try:
        cred = store.decode(raw)
    except pkg.IotError as e:
        cred, label = None, "corrupt"
        B.say(TOOL, "warning: the credential on %s is corrupt (%s): backing it up raw" % (board.port, e.msg))
    else:
        label = "badname"
    name = backup_name(cred, mac) if cred else None
    if name is None:
        if cred:
            B.say(
                TOOL, "warning: the credential on %s names an invalid pk/dn: backing it up raw" % board.port
            )
        for old in sorted(out_dir.glob("%s.%s.*.cred" % (label, mac))):
            if old.read_bytes() == raw:
                B.say(TOOL, "already backed up in %s" % old)
                return old
        name = _stamped(out_dir, "%s.%s" % (label, mac))
    path = out_dir / name
    if path.resolve().parent != out_dir.resolve():
        raise B.ToolError("backup name %r would leave %s" % (name, out_dir))
    if path.exists():
        if path.read_bytes() == raw:
            B.say(TOOL, "already backed up in %s" % path)
            return path
        # Never overwrite an older backup: it may be the only copy of a secret still in use.
        path = out_dir / _stamped(out_dir, path.name[: -len(".cred")])
    try:
        B.write_private(path, raw)
    except FileExistsError:
        raise B.ToolError("%s appeared meanwhile: run the backup again" % path) from None
    if path.read_bytes() != raw:
        raise B.ToolError("backup %s reads back different from the board's credential" % path)
    return path


def restore(board, path, force=False, other_board=False):
    """Write a backed-up credential to the board (temp file + rename), then compare its sha256 there.
    A backup of another board (another MAC in its name) is refused unless other_board: two boards with
    one identity knock each other offline."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise B.ToolError("cannot read %s: %s" % (path, e.strerror)) from None
    cred = _decode(raw, str(path))
    files = board.read_files([B.CRED_PATH, B.CONFIG_PATH])
    mac, src = board.mac(), mac_of_backup(path)
    if src is None:
        B.say(
            TOOL, "warning: %s does not name the board it came from; restoring to mac %s" % (path.name, mac)
        )
    elif src != mac and not other_board:
        raise B.ToolError(
            "%s is the backup of the board with mac %s, this board is %s: restoring it clones that device's "
            "identity; pass --other-board if that board is gone for good" % (path.name, src, mac)
        )
    elif src != mac:
        B.say(TOOL, "warning: restoring the identity of board %s onto board %s (--other-board)" % (src, mac))
    old_raw, old, problem = B.read_credential(board, files)
    if old_raw == raw:
        B.say(TOOL, "the board already holds this credential")
        return cred
    if old_raw is not None and not force:
        held = (
            "a corrupt credential (%s)" % problem
            if problem
            else "the credential of %s/%s" % (old["pk"], old["dn"])
        )
        raise B.ToolError("the board holds %s; pass --force to replace it" % held)
    conflict = _config_conflict(board, cred, files[B.CONFIG_PATH])
    if conflict and not force:
        raise B.ToolError(
            "%s: the board would refuse to boot (code=mismatch); pass --force to restore anyway" % conflict
        )
    got = board.put(path, B.CRED_PATH)
    if got != hashlib.sha256(raw).hexdigest():
        raise B.ToolError("the credential read back from the board differs from %s" % path)
    return cred


def _config_conflict(board, cred, data):
    """Why the board's config.json (data) names another device than cred, or None (also without a config)."""
    config, _, _ = B.firmware_modules()
    if data is None:
        return None
    try:
        cfg = json.loads(data)
    except ValueError:
        return None
    if not isinstance(cfg, dict):
        return None
    dn = cfg.get("device_name") or config.device_name_from_mac(bytes.fromhex(board.mac()))
    if (cfg.get("product_key"), dn) != (cred["pk"], cred["dn"]):
        return "config.json on the board is for %s/%s, the credential for %s/%s" % (
            cfg.get("product_key"),
            dn,
            cred["pk"],
            cred["dn"],
        )
    return None


def status(board):
    """Lines describing the board: MAC, credential, config (secrets as fingerprints)."""
    config, _, _ = B.firmware_modules()
    files = board.read_files([B.CRED_PATH, B.CONFIG_PATH])
    lines = ["port: %s" % board.port, "mac: %s" % board.mac()]
    raw, cred, problem = B.read_credential(board, files)
    if raw is None:
        lines.append("credential: none (the board registers on its next boot)")
    elif problem:
        lines.append("credential: CORRUPT (%s): the board will refuse to boot" % problem)
    else:
        flow = "dynamic registration (register/https)" if cred["kind"] == "secret" else "regnwl (token)"
        lines.append("credential: present %s; from %s" % (B.describe_cred(cred), flow))
    data = files[B.CONFIG_PATH]
    if data is None:
        lines.append("config: none (provision the board)")
    else:
        try:
            cfg = config.validate(json.loads(data))
        except (ValueError, config.ConfigError) as e:
            lines.append("config: INVALID (%s)" % getattr(e, "msg", e))
        else:
            lines.append(
                "config: %s/%s mode=%s host=%s"
                % (
                    cfg["product_key"],
                    cfg["device_name"] or "(from MAC)",
                    cfg["mode"],
                    cfg["host"] or "(default)",
                )
            )
    return lines


def parse_args(argv):
    ap = B.parser("cred", __doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (
        ("status", "show whether the board holds a credential, and whose"),
        ("backup", "copy the board's credential to a local 0600 file"),
        ("restore", "write a backed-up credential back to the board"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--port", "-p", required=True, help="serial port or socket:// URL of the board")
        p.add_argument("--board", default=B.DEFAULT_BOARD, help="board name (unused; accepted for make)")
        if name == "backup":
            p.add_argument("--dir", default=str(DEFAULT_DIR), help="backups folder (default %(default)s)")
        if name == "restore":
            p.add_argument("file", help="a backup file written by `backup`")
            p.add_argument("--force", action="store_true", help="replace a different credential on the board")
            p.add_argument(
                "--other-board",
                action="store_true",
                help="restore a backup taken from another board (another MAC): clones that identity",
            )
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    board = B.Board(a.port, TOOL)
    if a.cmd == "status":
        print("\n".join(status(board)))
    elif a.cmd == "backup":
        path = backup(board, a.dir)
        mode = os.stat(path).st_mode & 0o777
        try:
            what = B.describe_cred(_decode(path.read_bytes(), str(path)))
        except B.ToolError:
            what = "the raw (corrupt) credential"
        print("backed up %s to %s (mode %o)" % (what, path, mode))
    else:
        cred = restore(board, a.file, a.force, a.other_board)
        print("restored %s to %s" % (B.describe_cred(cred), a.port))
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
