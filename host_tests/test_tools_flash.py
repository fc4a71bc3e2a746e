"""tools/flash.py: the exact esptool commands (dry run), checked by esptool's own argument parser,
the chip check, and the guard that refuses to erase a credential that has no backup."""

import shlex
import subprocess
import sys
import warnings

import click
import esptool
import pytest

from host_tests.plugins.fakeboard import FakeBoard, cred
from tools import board as B
from tools import flash

REAL_BOARDS = ("ESP32_GENERIC", "ESP32_GENERIC_S3", "ESP32_GENERIC_C3")


@pytest.fixture
def firmware(tmp_path):
    p = tmp_path / "micropython.bin"
    p.write_bytes(b"\xe9" + bytes(255))
    return p


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
def test_dry_run_prints_commands_esptool_accepts(name, firmware):
    p = run_tool("--board", name, "--port", "/dev/ttyUSB7", "--firmware", str(firmware), "--dry-run")
    assert p.returncode == 0, p.stderr
    settings = B.load_board(name)
    lines = p.stdout.splitlines()
    assert [shlex.split(ln)[0] for ln in lines] == ["esptool"] * 3
    parsed = [esptool_parse(shlex.split(ln)[1:]) for ln in lines]
    commands = [c for _, c, _ in parsed]
    # v5 names: the parser resolves the old underscore aliases too, so compare with what was printed
    assert commands == ["read-mac", "erase-flash", "write-flash"]
    assert [shlex.split(ln)[-1] for ln in lines[:2]] == commands[:2]
    assert " write-flash " in lines[2]
    detect, erase, write = parsed
    assert detect[0]["chip"] == "auto" and detect[0]["port"] == "/dev/ttyUSB7"
    for g, _, _ in (erase, write):
        assert (g["chip"], g["port"], g["baud"]) == (settings["chip"], "/dev/ttyUSB7", 460800)
    ((addr, _),) = write[2]["addr_filename"]
    assert addr == int(settings["flash_offset"], 16)
    assert lines[2].endswith(" %s %s" % (settings["flash_offset"], firmware))


def test_no_erase_writes_only(firmware):
    p = run_tool("--port", "COM3", "--firmware", str(firmware), "--dry-run", "--no-erase")
    assert p.returncode == 0
    assert [ln.split()[-3] if "write-flash" in ln else ln.split()[-1] for ln in p.stdout.splitlines()] == [
        "read-mac",
        "write-flash",
    ]


def test_esptool_itself_runs_the_printed_commands_and_fails_only_on_the_port(firmware, tmp_path):
    # The real entry point: argument errors exit 2 with "Usage"; a missing port is a fatal connect error.
    p = run_tool(
        "--board",
        "ESP32_GENERIC_C3",
        "--port",
        str(tmp_path / "ttyNONE"),
        "--firmware",
        str(firmware),
        "--dry-run",
    )
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
    with pytest.raises(B.ToolError, match="without MicroPython.*--force"):
        flash.check_erase_allowed(FakeBoard(broken=True), tmp_path)
    assert "anyway" in flash.check_erase_allowed(FakeBoard(broken=True), tmp_path, force=True)
