"""Erase a board and write a MicroPython firmware image you downloaded, with esptool (v5 command names).

Before anything is erased: the chip on the port must be the board's chip, and a stored credential
(`aliyun_iot.cred`: erasing it locks an activated device out until ResetThing) must have a backup
(`python -m tools.cred backup`) that matches it byte for byte, unless --force.

    python -m tools.flash --board ESP32_GENERIC --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.29.0.bin
    python -m tools.flash ... --dry-run      # print the esptool commands, touch nothing
    python -m tools.flash ... --no-erase     # upgrade MicroPython in place: the filesystem is kept
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tools import board as B

TOOL = "flash"
_ESP_IMAGE_MAGIC = 0xE9
DEFAULT_BACKUPS = B.REPO / "backups"


def esptool_commands(settings, port, firmware, baud=None, erase=True):
    """[(purpose, argv without the leading 'esptool')]: detect the chip, erase, write."""
    baud = str(baud or settings["baud"])
    chip = settings["chip"]
    cmds = [("detect", ["--port", port, "--connect-attempts", "3", "--after", "no-reset", "read-mac"])]
    if erase:
        cmds.append(("erase", ["--chip", chip, "--port", port, "--baud", baud, "erase-flash"]))
    cmds.append(
        (
            "write",
            [
                "--chip",
                chip,
                "--port",
                port,
                "--baud",
                baud,
                "write-flash",
                settings["flash_offset"],
                str(firmware),
            ],
        )
    )
    return cmds


def detected_chip(output):
    """esptool's chip name in its output ('Connected to ESP32-S3 on ...') as its --chip value ('esp32s3')."""
    m = re.search(r"Connected to (ESP[0-9A-Za-z-]+) on ", output) or re.search(
        r"Detecting chip type\.\.\.\s*(ESP[0-9A-Za-z-]+)", output
    )
    return m.group(1).lower().replace("-", "") if m else None


def check_image(path):
    """The firmware file must exist and look like an ESP image (magic 0xE9), not a .uf2 or an HTML page."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            first = f.read(1)
    except OSError as e:
        raise B.ToolError("cannot read firmware %s: %s" % (path, e.strerror)) from None
    if not first or first[0] != _ESP_IMAGE_MAGIC:
        raise B.ToolError("%s is not an ESP32 firmware image (.bin starting with 0xE9)" % path)


def find_backup(raw, backups):
    """A backup file in backups whose bytes equal raw (the credential on the board), or None."""
    for path in sorted(Path(backups).glob("*.cred")):
        try:
            if path.read_bytes() == raw:
                return path
        except OSError:
            continue
    return None


def check_erase_allowed(board, backups, force=False):
    """Refuse (ToolError) to erase a board whose stored credential has no matching backup. Returns a note."""
    try:
        raw, cred, problem = B.read_credential(board)
    except B.ToolError as e:
        if force:
            return "could not check for a stored credential (%s); erasing anyway (--force)" % e
        raise B.ToolError(
            "cannot check %s for a stored credential (%s); a board without MicroPython holds none: "
            "pass --force to flash it" % (board.port, e)
        ) from None
    if raw is None:
        return "no stored credential on the board"
    if problem:
        if force:
            return "stored credential is corrupt (%s); erasing anyway (--force)" % problem
        raise B.ToolError("the board's stored credential is corrupt (%s); pass --force to erase it" % problem)
    backup = find_backup(raw, backups)
    if backup:
        return "stored credential %s/%s is backed up in %s" % (cred["pk"], cred["dn"], backup)
    if force:
        return "stored credential %s/%s NOT backed up; erasing anyway (--force)" % (cred["pk"], cred["dn"])
    raise B.ToolError(
        "the board holds the credential of %s/%s and %s has no backup of it: run "
        "`python -m tools.cred backup --port %s` first (an activated device that loses it is locked out "
        "until ResetThing), or pass --force" % (cred["pk"], cred["dn"], backups, board.port)
    )


def _esptool(args):
    argv = [sys.executable, "-m", "esptool", *args]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def _esptool_live(args):
    # Erase and write take tens of seconds: let esptool's own progress through to the terminal.
    return subprocess.run([sys.executable, "-m", "esptool", *args]).returncode


def parse_args(argv):
    ap = B.parser("flash", __doc__)
    ap.add_argument("--board", default=B.DEFAULT_BOARD, help="board name under boards/ (default %(default)s)")
    ap.add_argument("--port", "-p", required=True, help="serial port of the board, e.g. /dev/ttyUSB0 or COM3")
    ap.add_argument(
        "--firmware", "-f", required=True, help="MicroPython .bin for the board (micropython.org)"
    )
    ap.add_argument("--baud", type=int, help="flashing baud rate (default: the board's)")
    ap.add_argument("--backups", default=str(DEFAULT_BACKUPS), help="credential backups folder (%(default)s)")
    ap.add_argument("--no-erase", action="store_true", help="write without erasing: keeps the filesystem")
    ap.add_argument("--force", action="store_true", help="erase even a credential that has no backup")
    ap.add_argument("--dry-run", action="store_true", help="print the esptool commands; touch nothing")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    settings = B.load_board(a.board)
    if settings["chip"] is None:
        raise B.ToolError("board %s has no esptool chip: nothing to flash (deploy to it instead)" % a.board)
    check_image(a.firmware)
    cmds = esptool_commands(settings, a.port, a.firmware, a.baud, erase=not a.no_erase)
    if a.dry_run:
        for _, args in cmds:
            print(shlex.join(["esptool", *args]))
        return 0
    if not a.no_erase:
        B.say(TOOL, "checking %s for a stored credential" % a.port)
        B.say(TOOL, check_erase_allowed(B.Board(a.port, TOOL), a.backups, a.force))
    for purpose, args in cmds:
        B.say(TOOL, "%s: esptool %s" % (purpose, shlex.join(args)))
        if purpose == "detect":
            rc, out = _esptool(args)
            chip = detected_chip(out)
            if rc != 0 or chip is None:
                raise B.ToolError("no ESP chip answered on %s (hold BOOT while pressing EN?)" % a.port)
            if chip != settings["chip"]:
                raise B.ToolError(
                    "the chip on %s is %s but board %s is %s: pick the right --board"
                    % (a.port, chip, a.board, settings["chip"])
                )
            continue
        if _esptool_live(args) != 0:
            raise B.ToolError(
                "esptool %s failed on %s" % (args[-1] if purpose == "erase" else "write-flash", a.port)
            )
    B.say(
        TOOL,
        "done: %s written at %s; next: python -m tools.deploy --board %s --port %s"
        % (a.firmware, settings["flash_offset"], a.board, a.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
