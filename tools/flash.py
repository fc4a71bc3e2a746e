"""Erase a board and write a MicroPython firmware image you downloaded, with esptool (v5 command names).

Before anything is erased: the image must be an intact ESP image built for the board's chip (the chip
id in its header), the chip on the port must be the board's chip and have room for the image, and a
stored credential (`aliyun_iot.cred`: erasing it locks an activated device out until ResetThing) must
have a backup (`python -m tools.cred backup`) that matches it byte for byte, unless --force. After the
write, esptool verifies the flash against the file.

    python -m tools.flash --board ESP32_GENERIC --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.29.0.bin
    python -m tools.flash ... --dry-run      # check the image, print the esptool commands, touch nothing
    python -m tools.flash ... --no-erase     # upgrade MicroPython in place: the filesystem is kept
"""

import contextlib
import io
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

from tools import board as B

TOOL = "flash"
_ESP_IMAGE_MAGIC = 0xE9
_HEADER_LEN = 24  # common header (8) + extended header (16), where the chip id is
_CHIP_ID_AT = 12  # little-endian u16 in the extended header (esptool: image_chip_id)
DEFAULT_BACKUPS = B.REPO / "backups"


def esptool_commands(settings, port, firmware, baud=None, erase=True):
    """[(purpose, argv without the leading 'esptool')]: detect the chip, erase, write, verify."""
    baud = str(baud or settings["baud"])
    chip = settings["chip"]
    offset = settings["flash_offset"]
    common = ["--chip", chip, "--port", port, "--baud", baud]
    # detect runs with --chip auto (the default) so that a wrong chip is named, not just refused
    cmds = [("detect", ["--port", port, "--connect-attempts", "3", "flash-id"])]
    if erase:
        cmds.append(("erase", [*common, "erase-flash"]))
    cmds.append(("write", [*common, "write-flash", offset, str(firmware)]))
    cmds.append(("verify", [*common, "verify-flash", offset, str(firmware)]))
    return cmds


def detected_chip(output):
    """esptool's chip name in its output ('Connected to ESP32-S3 on ...') as its --chip value ('esp32s3')."""
    m = re.search(r"Connected to (ESP[0-9A-Za-z-]+) on ", output) or re.search(
        r"Detecting chip type\.\.\.\s*(ESP[0-9A-Za-z-]+)", output
    )
    return m.group(1).lower().replace("-", "") if m else None


def detected_flash_size(output):
    """Bytes of flash from esptool flash-id's 'Detected flash size: 4MB', or None."""
    m = re.search(r"Detected flash size:\s*(\d+)\s*([KM])B", output)
    if not m:
        return None
    return int(m.group(1)) << (20 if m.group(2) == "M" else 10)


def _esptool_error(output):
    """esptool's own fatal-error line, for our one-line message."""
    for line in output.splitlines():
        if "fatal error occurred:" in line:
            return line.split("fatal error occurred:", 1)[1].strip()[:200]
        if line.startswith("ERROR:"):
            return line[len("ERROR:") :].strip()[:200]
    return None


def _chip_ids():
    """{image chip id: esptool chip name} for every chip esptool knows."""
    from esptool.targets import CHIP_DEFS

    return {
        rom.IMAGE_CHIP_ID: name
        for name, rom in CHIP_DEFS.items()
        if getattr(rom, "IMAGE_CHIP_ID", None) is not None
    }


def _image_damage(chip, data):
    """Why esptool would not accept the image's first (bootloader) image, or None."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # esptool warns about odd segments on stdout
            img = LoadFirmwareImage(chip, data)
    except (FatalError, struct.error, RuntimeError, ValueError, KeyError, IndexError):
        return "its segments are truncated or garbled"
    if img.checksum != img.calculate_checksum():
        return "its checksum does not match"
    if getattr(img, "append_digest", False) and img.stored_digest != img.calc_digest:
        return "its SHA-256 digest does not match"
    return None


def check_image(path, settings):
    """The firmware file must be an intact ESP image for the board's chip (magic 0xE9, the chip id of its
    extended header, checksum and digest), not a .uf2, an HTML page or another chip's build.
    Returns its size in bytes."""
    if not str(path).strip():
        raise B.ToolError("no firmware file given (--firmware, or make flash FIRMWARE=...)")
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise B.ToolError("cannot read firmware %s: %s" % (path, e.strerror)) from None
    if not data or data[0] != _ESP_IMAGE_MAGIC:
        raise B.ToolError("%s is not an ESP32 firmware image (.bin starting with 0xE9)" % path)
    if len(data) < _HEADER_LEN:
        raise B.ToolError("%s is too short to be an ESP32 firmware image (%d bytes)" % (path, len(data)))
    chip_id = struct.unpack_from("<H", data, _CHIP_ID_AT)[0]
    chip = _chip_ids().get(chip_id)
    want = settings["chip"]
    if chip is None:
        raise B.ToolError(
            "%s has chip id %d in its header, which is no ESP chip: not a firmware image" % (path, chip_id)
        )
    if chip != want:
        raise B.ToolError(
            "%s is built for %s but board %s is %s: download the %s firmware (%s)"
            % (
                path,
                chip,
                settings["name"],
                want,
                settings["name"],
                settings["download"] or "micropython.org",
            )
        )
    damage = _image_damage(chip, data)
    if damage:
        raise B.ToolError("%s is damaged (%s): download it again" % (path, damage))
    return len(data)


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
        # A silent or busy port says nothing about the flash: a board whose program hangs, or that
        # another program holds open, keeps its credential all the same.
        raise B.ToolError(
            "cannot check %s for a stored credential (%s); the board may still hold one: close other "
            "programs using the port, reset the board and retry, or pass --force only if you know it "
            "holds no credential or you have its backup" % (board.port, e)
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
    # Erase and write take tens of seconds on a real board: let esptool's progress through, on stderr
    # (stdout carries only the tool's result).
    return subprocess.run([sys.executable, "-m", "esptool", *args], stdout=sys.stderr.fileno()).returncode


def parse_args(argv):
    ap = B.parser("flash", __doc__)  # no abbreviations, no option value in an error
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


def _detect(args, a, settings, size):
    """Run esptool flash-id: the chip on the port must be the board's and hold the image."""
    rc, out = _esptool(args)
    chip = detected_chip(out)
    if rc != 0 or chip is None:
        why = _esptool_error(out)
        raise B.ToolError(
            "no ESP chip answered on %s%s (hold BOOT while pressing EN?)"
            % (a.port, ": " + why if why else "")
        )
    if chip != settings["chip"]:
        raise B.ToolError(
            "the chip on %s is %s but board %s is %s: pick the right --board"
            % (a.port, chip, a.board, settings["chip"])
        )
    flash_size = detected_flash_size(out)
    end = int(settings["flash_offset"], 16) + size
    if flash_size is not None and end > flash_size:
        raise B.ToolError(
            "%s (%d bytes at %s) does not fit the board's %d MB flash"
            % (a.firmware, size, settings["flash_offset"], flash_size >> 20)
        )
    return "%s with %s flash" % (chip, "%d MB" % (flash_size >> 20) if flash_size else "unknown")


def main(argv=None):
    a = parse_args(argv)
    settings = B.load_board(a.board)
    if settings["chip"] is None:
        raise B.ToolError("board %s has no esptool chip: nothing to flash (deploy to it instead)" % a.board)
    if not a.port.strip():
        raise B.ToolError("no port given (--port /dev/ttyUSB0, COM3 or socket://127.0.0.1:PORT)")
    size = check_image(a.firmware, settings)
    cmds = esptool_commands(settings, a.port, a.firmware, a.baud, erase=not a.no_erase)
    if a.dry_run:
        for _, args in cmds:
            print(shlex.join(["esptool", *args]))
        return 0
    B.say(TOOL, "%s: %d bytes for %s at %s" % (a.firmware, size, settings["chip"], settings["flash_offset"]))
    for purpose, args in cmds:
        B.say(TOOL, "%s: esptool %s" % (purpose, shlex.join(args)))
        if purpose == "detect":
            B.say(TOOL, "found %s" % _detect(args, a, settings, size))
            if not a.no_erase:
                B.say(TOOL, "checking %s for a stored credential" % a.port)
                B.say(TOOL, check_erase_allowed(B.Board(a.port, TOOL), a.backups, a.force))
            continue
        if _esptool_live(args) != 0:
            command = next(x for x in args if x.endswith("-flash"))
            raise B.ToolError("esptool %s failed on %s (its output is above)" % (command, a.port))
    B.say(
        TOOL,
        "done: %s written at %s and verified; next: python -m tools.deploy --board %s --port %s"
        % (a.firmware, settings["flash_offset"], a.board, a.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
