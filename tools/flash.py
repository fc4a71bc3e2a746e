"""Erase a board and write a MicroPython firmware image you downloaded, with esptool (v5 command names).

Before anything is erased: the file must be a whole full-flash image built for the board's chip, every
image in it checked with esptool's own classes (the bootloader; the partition table at 0x8000 and its
MD5 entry; the app image at its partition's offset: header, chip id, segments, checksum, SHA-256), the
chip on the port must be the board's chip and its flash hold every partition, and a stored credential
(`aliyun_iot.cred`: erasing it locks an activated device out until ResetThing) must have a backup
(`python -m tools.cred backup`) that matches it byte for byte, unless --force. After the write, esptool
verifies the flash against the file, and the tool says how to restore the credential the erase removed.

    python -m tools.flash --board ESP32_GENERIC --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.29.0.bin
    python -m tools.flash ... --dry-run      # check the image, print the esptool commands, touch nothing
    python -m tools.flash ... --no-erase     # upgrade MicroPython in place: the filesystem is kept
"""

import contextlib
import hashlib
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


def _load_image(chip, data):
    """esptool's own image class for the ESP image at the start of data: (image, None) or (None, why)."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # esptool warns about odd segments on stdout
            img = LoadFirmwareImage(chip, data)
    except FatalError as e:
        if "End of file" in str(e):
            return None, "cut short (%s)" % str(e)[:80]
        return None, "its segments are garbled"
    except (struct.error, RuntimeError, ValueError, KeyError, IndexError, TypeError):
        return None, "its segments are truncated or garbled"
    if img.checksum != img.calculate_checksum():
        return None, "its checksum does not match"
    if getattr(img, "append_digest", False):
        if len(img.stored_digest) < 32:
            return None, "cut short (its SHA-256 digest is missing)"
        if img.stored_digest != img.calc_digest:
            return None, "its SHA-256 digest does not match"
    return img, None


def _image_end(img):
    """Bytes the image takes from its start: header, segments, checksum (padded to 16), digest."""
    return img.data_length + (32 if getattr(img, "append_digest", False) else 0)


_TABLE_AT = 0x8000  # the partition table's flash address (esp-idf CONFIG_PARTITION_TABLE_OFFSET default)
_TABLE_MAX = 0xC00  # esp-idf: at most 0xC00 bytes of table (the entries and the MD5 entry)
_ENTRY = struct.Struct("<2sBBLL16sL")  # magic 0xAA50, type, subtype, offset, size, label, flags


def parse_partitions(table):
    """[(label, type, subtype, offset, size)] of a binary partition table (esp-idf gen_esp32part.py
    format), checked against its MD5 entry. Raises ValueError naming what is wrong."""
    entries, md5 = [], None
    for at in range(0, min(len(table), _TABLE_MAX) - _ENTRY.size + 1, _ENTRY.size):
        raw = table[at : at + _ENTRY.size]
        if raw[:2] == b"\xaa\x50":
            _, ptype, sub, offset, size, label, _ = _ENTRY.unpack(raw)
            entries.append((label.rstrip(b"\0").decode("ascii", "replace"), ptype, sub, offset, size))
        elif raw[:2] == b"\xeb\xeb":
            md5 = (raw[16:], hashlib.md5(table[:at]).digest())
            break
        elif raw == b"\xff" * _ENTRY.size:
            break
        else:
            raise ValueError("entry %d is garbled" % (at // _ENTRY.size))
    else:
        raise ValueError("it is cut short")
    if not entries:
        raise ValueError("it lists no partition")
    if md5 is None:
        raise ValueError("it has no MD5 entry")
    if md5[0] != md5[1]:
        raise ValueError("its MD5 does not match")
    return entries


def _app_partition(parts):
    """The partition the bootloader starts: factory, else the first OTA slot (type app)."""
    apps = sorted((p for p in parts if p[1] == 0), key=lambda p: (p[2] != 0, p[3]))
    return apps[0] if apps else None


def check_full_image(data, chip, flash_offset):
    """Every image of a full-flash file written at flash_offset: the bootloader at the start, the
    partition table at 0x8000 (its MD5 entry), the app image at its partition's offset (header, chip
    id, segments, checksum, SHA-256), and that the file holds all of them. Returns
    {"partitions": [(label, type, subtype, offset, size)], "app": (offset, size)}; ValueError says why not."""
    boot, why = _load_image(chip, data)
    if why:
        raise ValueError("its bootloader: %s" % why)
    table_at = _TABLE_AT - flash_offset
    if table_at < 0 or _image_end(boot) > table_at:
        raise ValueError("its bootloader runs into the partition table at 0x%x" % _TABLE_AT)
    if len(data) < table_at + _ENTRY.size:
        raise ValueError(
            "the file ends at 0x%x, before the partition table at 0x%x: cut short, or not a full-flash "
            "image" % (flash_offset + len(data), _TABLE_AT)
        )
    try:
        parts = parse_partitions(data[table_at : table_at + _TABLE_MAX])
    except ValueError as e:
        raise ValueError("its partition table at 0x%x: %s" % (_TABLE_AT, e)) from None
    app = _app_partition(parts)
    if app is None:
        raise ValueError("its partition table lists no app partition")
    label, _, _, app_at, app_size = app
    at = app_at - flash_offset
    if at < table_at + _TABLE_MAX or len(data) <= at:
        raise ValueError(
            "the file ends at 0x%x and holds no app image at 0x%x (partition %s): cut short"
            % (flash_offset + len(data), app_at, label)
        )
    if data[at] != _ESP_IMAGE_MAGIC:
        raise ValueError("there is no ESP image at 0x%x, where its partition %s starts" % (app_at, label))
    img, why = _load_image(chip, data[at:])
    if why:
        raise ValueError("its app image at 0x%x: %s" % (app_at, why))
    if struct.unpack_from("<H", data, at + _CHIP_ID_AT)[0] != struct.unpack_from("<H", data, _CHIP_ID_AT)[0]:
        raise ValueError("its app image at 0x%x is built for another chip than its bootloader" % app_at)
    if _image_end(img) > app_size:
        raise ValueError("its app image at 0x%x is larger than its partition %s" % (app_at, label))
    return {"partitions": parts, "app": (app_at, app_size)}


def check_image(path, settings):
    """The firmware file must be a whole full-flash image for the board's chip (magic 0xE9, the chip id of
    its extended header; then check_full_image: bootloader, partition table, app), not a .uf2, an HTML
    page, an app-only .bin or another chip's build. Returns check_full_image's layout and "size"."""
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
    try:
        layout = check_full_image(data, chip, int(settings["flash_offset"], 16))
    except ValueError as e:
        raise B.ToolError("%s is damaged or incomplete: %s: download it again" % (path, e)) from None
    layout["size"] = len(data)
    return layout


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
    return erase_guard(board, backups, force)[0]


def erase_guard(board, backups, force=False):
    """check_erase_allowed's work: (note, the backup of the credential the erase removes, or None)."""
    try:
        raw, cred, problem = B.read_credential(board)
    except B.ToolError as e:
        if force:
            return "could not check for a stored credential (%s); erasing anyway (--force)" % e, None
        # A silent or busy port says nothing about the flash: a board whose program hangs, or that
        # another program holds open, keeps its credential all the same.
        raise B.ToolError(
            "cannot check %s for a stored credential (%s); the board may still hold one: close other "
            "programs using the port, reset the board and retry, or pass --force only if you know it "
            "holds no credential or you have its backup" % (board.port, e)
        ) from None
    if raw is None:
        return "no stored credential on the board", None
    if problem:
        if force:
            return "stored credential is corrupt (%s); erasing anyway (--force)" % problem, None
        raise B.ToolError("the board's stored credential is corrupt (%s); pass --force to erase it" % problem)
    backup = find_backup(raw, backups)
    if backup:
        return "stored credential %s/%s is backed up in %s" % (cred["pk"], cred["dn"], backup), backup
    if force:
        what = "%s/%s" % (cred["pk"], cred["dn"])
        return "stored credential %s NOT backed up; erasing anyway (--force)" % what, None
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


def _detect(args, a, settings, layout):
    """Run esptool flash-id: the chip on the port must be the board's and hold the image and every
    partition its table lists."""
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
    end = int(settings["flash_offset"], 16) + layout["size"]
    if flash_size is not None and end > flash_size:
        raise B.ToolError(
            "%s (%d bytes at %s) does not fit the board's %d MB flash"
            % (a.firmware, layout["size"], settings["flash_offset"], flash_size >> 20)
        )
    for label, _, _, offset, psize in layout["partitions"]:
        if flash_size is not None and offset + psize > flash_size:
            raise B.ToolError(
                "%s is built for a larger flash: its partition %s ends at 0x%x, the board has %d MB: "
                "download the firmware for %d MB boards" % (a.firmware, label, offset + psize,
                                                              flash_size >> 20, flash_size >> 20)
            )  # fmt: skip
    return "%s with %s flash" % (chip, "%d MB" % (flash_size >> 20) if flash_size else "unknown")


def main(argv=None):
    a = parse_args(argv)
    settings = B.load_board(a.board)
    if settings["chip"] is None:
        raise B.ToolError("board %s has no esptool chip: nothing to flash (deploy to it instead)" % a.board)
    if not a.port.strip():
        raise B.ToolError("no port given (--port /dev/ttyUSB0, COM3 or socket://127.0.0.1:PORT)")
    layout = check_image(a.firmware, settings)
    size = layout["size"]
    cmds = esptool_commands(settings, a.port, a.firmware, a.baud, erase=not a.no_erase)
    erased = None
    if a.dry_run:
        for _, args in cmds:
            print(shlex.join(["esptool", *args]))
        return 0
    B.say(
        TOOL,
        "%s: %d bytes for %s at %s: bootloader, partition table, app at 0x%x checked"
        % (a.firmware, size, settings["chip"], settings["flash_offset"], layout["app"][0]),
    )
    for purpose, args in cmds:
        B.say(TOOL, "%s: esptool %s" % (purpose, shlex.join(args)))
        if purpose == "detect":
            B.say(TOOL, "found %s" % _detect(args, a, settings, layout))
            if not a.no_erase:
                B.say(TOOL, "checking %s for a stored credential" % a.port)
                note, erased = erase_guard(B.Board(a.port, TOOL), a.backups, a.force)
                B.say(TOOL, note)
                if erased:
                    B.say(TOOL, "the erase removes that credential from the board: restore it after "
                          "the write (the command follows at the end)")  # fmt: skip
            continue
        if _esptool_live(args) != 0:
            command = next(x for x in args if x.endswith("-flash"))
            raise B.ToolError("esptool %s failed on %s (its output is above)" % (command, a.port))
    B.say(
        TOOL,
        "done: %s written at %s and verified; next: python -m tools.deploy --board %s --port %s"
        % (a.firmware, settings["flash_offset"], a.board, a.port),
    )
    if erased:
        # The erase took the credential with the filesystem: without it an activated device is locked
        # out of registration. Say how to put it back before the board's first boot.
        B.say(
            TOOL,
            "the erase removed the board's credential: restore it now, before the board boots our "
            "main.py (an activated device cannot register again): make restore PORT=%s FILE=%s"
            % (a.port, erased),
        )
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
