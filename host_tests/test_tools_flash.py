"""tools/flash.py: the exact esptool commands (dry run), checked by esptool's own argument parser; the
image check (chip id, damage) and the guard that refuses to erase a credential that has no backup; and
the whole path with the real esptool 5.6 against the virtual board's ROM bootloader (`make flash`)."""

import shlex
import struct
import subprocess
import sys
import time
import warnings

import click
import esptool
import pytest

from host_tests.plugins.esp_image import bootloader_image, esp_image, layout, partition_table
from host_tests.plugins.fakeboard import FakeBoard, cred
from tools import board as B
from tools import flash

REAL_BOARDS = ("ESP32_GENERIC", "ESP32_GENERIC_S3", "ESP32_GENERIC_C3")


@pytest.fixture
def firmware(esp_firmware):
    return esp_firmware("esp32")


def run_tool(*args):
    return subprocess.run(
        [sys.executable, "-m", "tools.flash", *args], cwd=B.REPO, capture_output=True, text=True, timeout=60
    )


def esptool_parse(argv):
    """Parse argv as the esptool command line does, without a device: (global params, command, params)."""
    esptool.cli._esp = None  # what EsptoolGroup.__call__ sets before parsing
    names = set(esptool.cli.list_commands(click.Context(esptool.cli)))
    i = next(i for i, a in enumerate(argv) if a in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = esptool.cli.make_context("esptool", argv[: i + 1])
        name, cmd, rest = esptool.cli.resolve_command(ctx, argv[i:])
        sub = cmd.make_context(name, rest, parent=ctx)
    for _, f in sub.params.get("addr_filename") or ():
        f.close()
    return ctx.params, name, sub.params


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_dry_run_prints_commands_esptool_accepts(name, esp_firmware):
    settings = B.load_board(name)
    firmware = esp_firmware(settings["chip"])
    p = run_tool("--board", name, "--port", "/dev/ttyUSB7", "--firmware", str(firmware), "--dry-run")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert [shlex.split(ln)[0] for ln in lines] == ["esptool"] * 4
    parsed = [esptool_parse(shlex.split(ln)[1:]) for ln in lines]
    commands = [c for _, c, _ in parsed]
    # v5 names: the parser resolves the old underscore aliases too, so compare with what was printed
    assert commands == ["flash-id", "erase-flash", "write-flash", "verify-flash"]
    assert [shlex.split(ln)[-1] for ln in lines[:2]] == commands[:2]
    assert " write-flash " in lines[2] and " verify-flash " in lines[3]
    detect, erase, write, verify = parsed
    assert detect[0]["chip"] == "auto" and detect[0]["port"] == "/dev/ttyUSB7"
    for g, _, _ in (erase, write, verify):
        assert (g["chip"], g["port"], g["baud"]) == (settings["chip"], "/dev/ttyUSB7", 460800)
    for _, _, params in (write, verify):
        ((addr, _),) = params["addr_filename"]
        assert addr == int(settings["flash_offset"], 16)
    for line in lines[2:]:
        assert line.endswith(" %s %s" % (settings["flash_offset"], firmware))


def test_no_erase_writes_only(firmware):
    p = run_tool("--port", "COM3", "--firmware", str(firmware), "--dry-run", "--no-erase")
    assert p.returncode == 0
    assert [ln.split()[-3] if "-flash " in ln else ln.split()[-1] for ln in p.stdout.splitlines()] == [
        "flash-id",
        "write-flash",
        "verify-flash",
    ]


def test_esptool_itself_runs_the_printed_commands_and_fails_only_on_the_port(esp_firmware, tmp_path):
    # The real entry point: argument errors exit 2 with "Usage"; a missing port is a fatal connect error.
    firmware = esp_firmware("esp32c3")
    p = run_tool(
        "--board",
        "ESP32_GENERIC_C3",
        "--port",
        str(tmp_path / "ttyNONE"),
        "--firmware",
        str(firmware),
        "--dry-run",
    )
    assert len(p.stdout.splitlines()) == 4
    for line in p.stdout.splitlines()[1:]:
        q = subprocess.run(
            [sys.executable, "-m", "esptool", "--connect-attempts", "1", *shlex.split(line)[1:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = q.stdout + q.stderr
        assert q.returncode != 0
        assert "Could not open %s" % (tmp_path / "ttyNONE") in out, out
        assert "Usage:" not in out and "Invalid value" not in out


def test_detected_chip_reads_esptool_output():
    out = "esptool v5.6.0\nConnected to ESP32-S3 on /dev/ttyUSB0:\nChip type:          ESP32-S3 (QFN56)\n"
    assert flash.detected_chip(out) == "esp32s3"
    assert flash.detected_chip("Connecting....\nConnected to ESP32 on COM3:\n") == "esp32"
    assert flash.detected_chip("Detecting chip type... ESP32-C3\n") == "esp32c3"
    assert flash.detected_chip("A fatal error occurred: Failed to connect") is None
    assert flash.detected_flash_size("Detected flash size: 4MB\n") == 4 << 20
    assert flash.detected_flash_size("Detected flash size: 512KB\n") == 512 << 10
    assert flash.detected_flash_size("Detected flash size: Unknown\n") is None


def test_refuses_what_is_not_an_esp_image(tmp_path):
    bad = tmp_path / "download.bin"
    bad.write_bytes(b"<!DOCTYPE html>")
    p = run_tool("--port", "/dev/ttyUSB0", "--firmware", str(bad), "--dry-run")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "flash: error: %s is not an ESP32 firmware image (.bin starting with 0xE9)" % bad
    ]
    p = run_tool("--port", "/dev/ttyUSB0", "--firmware", str(tmp_path / "missing.bin"), "--dry-run")
    assert p.returncode == 1 and "cannot read firmware" in p.stderr


@pytest.mark.parametrize(
    ("name", "image_chip"),
    [("ESP32_GENERIC", "esp32s3"), ("ESP32_GENERIC_S3", "esp32"), ("ESP32_GENERIC_C3", "esp32")],
)
def test_refuses_an_image_built_for_another_chip(name, image_chip, esp_firmware):
    # Only the first byte used to be checked: an S3 image went to an ESP32 at 0x1000, after the erase.
    fw = esp_firmware(image_chip)
    settings = B.load_board(name)
    p = run_tool("--board", name, "--port", "/dev/ttyUSB0", "--firmware", str(fw), "--dry-run")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "flash: error: %s is built for %s but board %s is %s: download the %s firmware (%s)"
        % (fw, image_chip, name, settings["chip"], name, settings["download"])
    ]


def test_refuses_a_damaged_or_unknown_image(tmp_path):
    good = esp_image("esp32")
    n = len(bootloader_image("esp32"))  # the bootloader image: header, segment, checksum, digest
    cases = {
        "flipped.bin": (
            good[:40] + bytes([good[40] ^ 1]) + good[41:],
            "is damaged or incomplete: its bootloader: its checksum does not match",
        ),
        "digest.bin": (
            good[: n - 1] + bytes([good[n - 1] ^ 1]) + good[n:],
            "its bootloader: its SHA-256 digest does not match",
        ),
        "cut.bin": (good[:100], "its bootloader: cut short (End of file reading segment"),
        "short.bin": (good[:20], "is too short to be an ESP32 firmware image (20 bytes)"),
        "chip99.bin": (
            good[:12] + struct.pack("<H", 99) + good[14:],
            "has chip id 99 in its header, which is no ESP",
        ),
    }
    for name, (data, want) in cases.items():
        (tmp_path / name).write_bytes(data)
        p = run_tool("--port", "/dev/ttyUSB0", "--firmware", str(tmp_path / name), "--dry-run")
        assert p.returncode == 1 and p.stdout == "", name
        (line,) = p.stderr.strip().splitlines()
        assert line.startswith("flash: error: %s " % (tmp_path / name)) and want in line, line


@pytest.mark.parametrize("chip", ["esp32", "esp32s3"])
def test_every_image_in_the_file_is_checked_before_anything(chip, tmp_path):
    # Only the bootloader used to be checked: a download cut anywhere after it went to the board.
    name = {"esp32": "ESP32_GENERIC", "esp32s3": "ESP32_GENERIC_S3"}[chip]
    good = esp_image(chip, app_size=12 * 1024)
    at = layout(chip)
    table, app = at["table"], at["app"]
    flip = lambda data, i: data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]  # noqa: E731
    tab_entries = partition_table()
    cases = {
        "app-cut-5k.bin": (good[: len(good) - 5 * 1024], "its app image at 0x10000: cut short (End of file"),
        "app-digest-cut.bin": (
            good[:-10],
            "its app image at 0x10000: cut short (its SHA-256 digest is missing)",
        ),
        "app-digest.bin": (
            flip(good, len(good) - 1),
            "its app image at 0x10000: its SHA-256 digest does not match",
        ),
        "app-checksum.bin": (flip(good, app + 100), "its app image at 0x10000: its checksum does not match"),
        "no-app.bin": (
            good[:app],
            "the file ends at 0x10000 and holds no app image at 0x10000 (partition factory): cut short",
        ),
        "bootloader-only.bin": (
            good[:table],
            "before the partition table at 0x8000: cut short, or not a full-flash image",
        ),
        "table-md5.bin": (flip(good, table + 40), "its partition table at 0x8000: its MD5 does not match"),
        "table-no-md5.bin": (
            good[:table] + partition_table(md5=False) + good[table + len(tab_entries) :],
            "its partition table at 0x8000: it has no MD5 entry",
        ),
        "table-garbled.bin": (
            good[:table] + b"\x00" * 32 + good[table + 32 :],
            "its partition table at 0x8000: entry 0 is garbled",
        ),
        "app-other-chip.bin": (
            good[:app] + esp_image("esp32c3")[layout("esp32c3")["app"] :],
            "its app image at 0x10000 is built for another chip than its bootloader",
        ),
        "app-not-image.bin": (good[:app] + b"\xff" * 64, "there is no ESP image at 0x10000"),
    }
    for fname, (data, want) in cases.items():
        (tmp_path / fname).write_bytes(data)
        p = run_tool("--board", name, "--port", "/dev/ttyUSB0", "--firmware", tmp_path / fname, "--dry-run")
        assert p.returncode == 1 and p.stdout == "", fname
        (line,) = p.stderr.strip().splitlines()
        assert line.startswith("flash: error: %s is damaged or incomplete: " % (tmp_path / fname)), line
        assert want in line and line.endswith(": download it again"), (fname, line)
    (tmp_path / "good.bin").write_bytes(good)
    p = run_tool("--board", name, "--port", "/dev/ttyUSB0", "--firmware", tmp_path / "good.bin", "--dry-run")
    assert p.returncode == 0, p.stderr


def test_partition_table_rules():
    assert flash.parse_partitions(partition_table())[2] == ("factory", 0, 0, 0x10000, 0x1F0000)
    ota = (("nvs", 1, 2, 0x9000, 0x5000), ("ota_0", 0, 0x10, 0x10000, 0x180000),
           ("ota_1", 0, 0x11, 0x190000, 0x180000))  # fmt: skip
    assert flash._app_partition(flash.parse_partitions(partition_table(ota)))[0] == "ota_0"
    with pytest.raises(ValueError, match="cut short"):
        flash.parse_partitions(partition_table()[:64])
    with pytest.raises(ValueError, match="lists no partition"):
        flash.parse_partitions(partition_table(()))


def test_usage_errors_never_echo_a_value(firmware):
    p = run_tool("--port", "COM3", "--firm", str(firmware))  # abbreviations are not options
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "python -m tools.flash: error: the following arguments are required: --firmware/-f"
    )
    p = run_tool(
        "--port", "COM3", "--firmware", str(firmware), "--product-secret", "Sup3rSecretValue", "--dry-run"
    )
    assert p.returncode == 2 and "Sup3rSecretValue" not in p.stderr + p.stdout
    assert p.stderr.strip().splitlines()[-1] == (
        "python -m tools.flash: error: unrecognized option(s): --product-secret (values not shown)"
    )
    p = run_tool("--port", "", "--firmware", "")
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "flash: error: no port given (--port /dev/ttyUSB0, COM3 or socket://127.0.0.1:PORT)"
    ]
    p = run_tool("--port", "COM3", "--firmware", "")
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "flash: error: no firmware file given (--firmware, or make flash FIRMWARE=...)"
    ]


def test_virtual_board_has_nothing_to_flash(firmware):
    p = run_tool("--board", "VIRTUAL", "--port", "x", "--firmware", str(firmware), "--dry-run")
    assert p.returncode == 1 and "nothing to flash" in p.stderr


# ---- the credential guard, on an in-memory board (the mpremote path: test_tools_vboard.py)

_, STORE, _ = B.firmware_modules()


def test_guard_allows_a_board_without_credential(tmp_path):
    assert "no stored credential" in flash.check_erase_allowed(FakeBoard(), tmp_path)


def test_guard_refuses_a_credential_without_backup(tmp_path):
    board = FakeBoard(files={B.CRED_PATH: STORE.encode(cred())})
    (tmp_path / "other.cred").write_bytes(STORE.encode(cred(dn="esp32-other")))
    with pytest.raises(B.ToolError, match="a1PK/esp32-240ac4000001 .*no backup.*tools.cred backup"):
        flash.check_erase_allowed(board, tmp_path)
    assert "NOT backed up" in flash.check_erase_allowed(board, tmp_path, force=True)


def test_guard_accepts_a_matching_backup(tmp_path):
    raw = STORE.encode(cred())
    (tmp_path / "a1PK.esp32-240ac4000001.240ac4000001.cred").write_bytes(raw)
    note = flash.check_erase_allowed(FakeBoard(files={B.CRED_PATH: raw}), tmp_path)
    assert "backed up in" in note


def test_guard_refuses_corrupt_credential_and_unreachable_board(tmp_path):
    board = FakeBoard(files={B.CRED_PATH: b'{"v": 1, "garbage'})
    with pytest.raises(B.ToolError, match="corrupt"):
        flash.check_erase_allowed(board, tmp_path)
    # a silent or busy port proves nothing: a board with a hung app still holds its credential
    with pytest.raises(B.ToolError) as e:
        flash.check_erase_allowed(FakeBoard(broken=True), tmp_path)
    msg = str(e.value)
    assert "may still hold one" in msg and "close other programs using the port" in msg
    assert "--force only if you know it holds no credential or you have its backup" in msg
    assert "without MicroPython" not in msg
    assert "anyway" in flash.check_erase_allowed(FakeBoard(broken=True), tmp_path, force=True)


# ---- the whole path: the real esptool 5.6 against the virtual board's ROM bootloader (socket://)

_PLANTED_SECRET = "PlantedDeviceSecretNeverShown01"


def make_flash(name, url, firmware, *args):
    """`make flash` as a user types it (PY: this interpreter)."""
    argv = [
        "make",
        "-s",
        "flash",
        "PY=" + sys.executable,
        "BOARD=" + name,
        "PORT=" + url,
        "FIRMWARE=%s" % firmware,
    ]
    if args:
        argv.append("ARGS=" + shlex.join(str(a) for a in args))
    return subprocess.run(argv, cwd=B.REPO, capture_output=True, text=True, timeout=300)


def read_back(url, chip, size, tmp_path):
    """The board's flash from 0 to size, read with esptool read-flash."""
    dest = tmp_path / "readback.bin"
    argv = [
        sys.executable,
        "-m",
        "esptool",
        "--chip",
        chip,
        "--port",
        url,
        "read-flash",
        "0x0",
        str(size),
        str(dest),
    ]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return dest.read_bytes()


def download_sessions(vb):
    return vb.console().count("vboard: download mode: ROM bootloader")


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_make_flash_writes_each_board_kind_at_its_offset(
    name, vboard, esp_firmware, tmp_path, record_property
):
    settings = B.load_board(name)
    chip, offset = settings["chip"], int(settings["flash_offset"], 16)
    vb = vboard(chip=chip)
    (vb.flash / "main.py").write_text("print('old app')\n")  # no credential: the guard lets it erase
    fw = esp_firmware(chip)
    t0 = time.monotonic()
    p = make_flash(name, vb.url, fw, "--backups", tmp_path / "backups")
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == ""  # esptool's progress goes to stderr with the tool's own
    assert "flash: found %s with 4 MB flash" % chip in p.stderr
    assert "flash: no stored credential on the board" in p.stderr
    assert "Verification successful (digest matched)." in p.stderr
    assert "flash: done: %s written at %s and verified" % (fw, settings["flash_offset"]) in p.stderr
    assert list(vb.flash.iterdir()) == []  # erase-flash wiped the filesystem
    data = fw.read_bytes()
    assert read_back(vb.url, chip, offset + len(data), tmp_path) == b"\xff" * offset + data
    assert download_sessions(vb) == 5  # detect, erase, write, verify, our read-back
    record_property(
        "measure", "make flash %s (%d kB, virtual board): %.1f s" % (name, len(data) >> 10, elapsed)
    )


def _board_with_credential(vboard, chip):
    _, store, _ = B.firmware_modules()
    vb = vboard(chip=chip, mac="24:0a:c4:dd:00:01")
    raw = store.encode({"kind": "secret", "pk": "a1FLASH", "dn": "esp32-240ac4dd0001", "ds": _PLANTED_SECRET})
    (vb.flash / B.CRED_PATH).write_bytes(raw)
    return vb, raw


def test_wrong_chip_and_wrong_chip_image_are_refused_before_any_erase(vboard, esp_firmware, tmp_path):
    vb, raw = _board_with_credential(vboard, "esp32s3")
    # an ESP32 image for an ESP32 board: the image is fine, the chip on the port is not
    p = run_tool("--board", "ESP32_GENERIC", "--port", vb.url, "--firmware", esp_firmware("esp32"), "--force")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (
        "flash: error: the chip on %s is esp32s3 but board ESP32_GENERIC is esp32: pick the right --board"
        % vb.url
    )
    assert download_sessions(vb) == 1 and "flash: erase:" not in p.stderr
    # an ESP32 image for the right board (S3): refused before the port is even opened
    p = run_tool(
        "--board", "ESP32_GENERIC_S3", "--port", vb.url, "--firmware", esp_firmware("esp32"), "--force"
    )
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "is built for esp32 but board ESP32_GENERIC_S3 is esp32s3" in p.stderr
    assert download_sessions(vb) == 1
    # the right chip, the right board, the app image of the download cut 5 KB short: refused, untouched
    cut = tmp_path / "cut.bin"
    cut.write_bytes(esp_image("esp32s3", app_size=12 * 1024)[: -5 * 1024])
    p = make_flash("ESP32_GENERIC_S3", vb.url, cut, "--force")
    assert p.returncode != 0
    assert "flash: error: %s is damaged or incomplete: its app image at 0x10000: cut short" % cut in p.stderr
    assert download_sessions(vb) == 1
    assert (vb.flash / B.CRED_PATH).read_bytes() == raw and "filesystem erased" not in vb.console()
    assert not vb.image.exists()  # nothing was ever written to the flash


def test_erase_guard_refuses_until_backed_up_then_really_wipes_the_credential(vboard, esp_firmware, tmp_path):
    vb, raw = _board_with_credential(vboard, "esp32c3")
    fw = esp_firmware("esp32c3")
    backups = tmp_path / "backups"
    p = make_flash("ESP32_GENERIC_C3", vb.url, fw, "--backups", backups)
    assert p.returncode != 0
    assert (
        "the board holds the credential of a1FLASH/esp32-240ac4dd0001 and %s has no backup of it" % backups
        in (p.stderr)
    )
    assert (vb.flash / B.CRED_PATH).read_bytes() == raw and "filesystem erased" not in vb.console()
    assert download_sessions(vb) == 1  # detect only

    q = subprocess.run(
        [sys.executable, "-m", "tools.cred", "backup", "--port", vb.url, "--dir", str(backups)],
        cwd=B.REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert q.returncode == 0, q.stderr
    (backup,) = backups.glob("*.cred")
    assert backup.read_bytes() == raw

    p = make_flash("ESP32_GENERIC_C3", vb.url, fw, "--backups", backups)
    assert p.returncode == 0, p.stderr
    assert "stored credential a1FLASH/esp32-240ac4dd0001 is backed up in %s" % backup in p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "flash: the erase removed the board's credential: restore it now, before the board boots our main.py "
        "(an activated device cannot register again): make restore PORT=%s FILE=%s" % (vb.url, backup)
    )
    assert not (vb.flash / B.CRED_PATH).exists() and "filesystem erased" in vb.console()
    assert read_back(vb.url, "esp32c3", len(fw.read_bytes()), tmp_path) == fw.read_bytes()
    out = vb.mpremote("exec", "import os; print(os.listdir('/'))")
    assert out.returncode == 0 and out.stdout.strip() == "[]"  # MicroPython sees the credential gone
    for text in (p.stdout, p.stderr, q.stdout, q.stderr, vb.console()):
        assert _PLANTED_SECRET not in text
