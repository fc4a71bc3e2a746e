"""The virtual board in download mode: the real esptool 5.6 against its ROM bootloader over socket://,
a flash that persists per board, erases that wipe the filesystem as on a chip, and mpremote still
answered on the same URL."""

import subprocess
import sys
import time

import pytest

from host_tests.plugins.vboard import REPO
from tools.vboard import rom

CHIP_NAMES = {"esp32": "ESP32", "esp32s3": "ESP32-S3", "esp32c3": "ESP32-C3"}


def esptool(url, *args, chip=None, timeout=120):
    argv = [sys.executable, "-m", "esptool", "--port", url, *(["--chip", chip] if chip else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def ok(p):
    assert p.returncode == 0, "rc=%d\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
    return p.stdout


def read_flash(vb, chip, offset, size, dest):
    ok(esptool(vb.url, "read-flash", hex(offset), str(size), str(dest), chip=chip))
    return dest.read_bytes()


@pytest.mark.parametrize("chip", sorted(CHIP_NAMES))
def test_esptool_finds_the_chip_refuses_a_wrong_one_and_mpremote_still_answers(vboard, chip, record_property):
    vb = vboard(chip=chip)
    t0 = time.monotonic()
    out = ok(esptool(vb.url, "flash-id"))  # --chip auto: esptool identifies the chip itself
    record_property("measure", "vboard ROM: esptool flash-id (%s): %.2f s" % (chip, time.monotonic() - t0))
    assert "Connected to %s on %s:" % (CHIP_NAMES[chip], vb.url) in out
    assert "Detected flash size: 4MB" in out
    other = "esp32c3" if chip != "esp32c3" else "esp32"
    p = esptool(vb.url, "flash-id", chip=other)
    assert p.returncode != 0
    assert (
        "This chip is %s, not %s. Wrong chip argument?" % (CHIP_NAMES[chip], CHIP_NAMES[other])
        in p.stdout + p.stderr
    )
    # the same URL is a MicroPython REPL again once esptool has gone (the board was reset)
    assert ok(vb.mpremote("exec", "print(6 * 7)")).strip() == "42"
    assert vb.console().count("download mode: ROM bootloader (%s)" % chip) == 2


def test_flash_persists_and_erases_wipe_the_filesystem(vboard, tmp_path, record_property):
    flash = tmp_path / "flash"
    (flash / "lib").mkdir(parents=True)
    (flash / "lib" / "app.py").write_text("x = 1\n")
    (flash / "aliyun_iot.cred").write_bytes(b'{"v": 1}')
    blob = bytes(range(256)) * 256  # 64 kB, every byte value
    (tmp_path / "blob.bin").write_bytes(blob)
    vb = vboard(flash=flash, chip="esp32")

    t0 = time.monotonic()
    ok(esptool(vb.url, "write-flash", "0x10000", str(tmp_path / "blob.bin"), chip="esp32"))
    t1 = time.monotonic()
    back = read_flash(vb, "esp32", 0x10000, len(blob), tmp_path / "back.bin")
    t2 = time.monotonic()
    record_property("measure", "vboard ROM: esptool write-flash 64 kB: %.2f s, read-flash 64 kB: %.2f s"
                    % (t1 - t0, t2 - t1))  # fmt: skip
    assert back == blob
    assert (flash / "aliyun_iot.cred").exists() and (flash / "lib" / "app.py").exists()  # below 0x200000
    assert vb.image == rom.image_path(flash) and vb.image.read_bytes()[0x10000:] == blob.rstrip(b"\xff")

    vb.stop()  # a power cycle: the next board process reads the same flash image
    vb = vboard(flash=flash, chip="esp32")
    assert read_flash(vb, "esp32", 0x10000, len(blob), tmp_path / "again.bin") == blob

    # an erase below the filesystem partition keeps the files; one that reaches it wipes them
    ok(esptool(vb.url, "erase-region", "0x10000", "0x1000", chip="esp32"))
    assert (
        read_flash(vb, "esp32", 0x10000, 0x2000, tmp_path / "r.bin") == b"\xff" * 0x1000 + blob[0x1000:0x2000]
    )
    assert (flash / "aliyun_iot.cred").exists()
    ok(esptool(vb.url, "erase-region", hex(rom.FS_OFFSET), "0x1000", chip="esp32"))
    assert list(flash.iterdir()) == []

    (flash / "aliyun_iot.cred").write_bytes(b'{"v": 1}')
    ok(esptool(vb.url, "erase-flash", chip="esp32"))
    assert list(flash.iterdir()) == [] and vb.image.read_bytes() == b""  # stored without trailing 0xFF
    assert read_flash(vb, "esp32", 0x10000, 0x1000, tmp_path / "e.bin") == b"\xff" * 0x1000
    assert "filesystem erased" in vb.console()
    out = ok(vb.mpremote("exec", "import os; print(os.listdir('/'))"))
    assert out.strip() == "[]"  # MicroPython boots on the empty filesystem


def test_a_write_into_the_filesystem_partition_wipes_it(vboard, tmp_path):
    vb = vboard(chip="esp32c3")
    (vb.flash / "config.json").write_text("{}")
    (tmp_path / "fs.bin").write_bytes(b"\x00" * 4096)
    ok(esptool(vb.url, "write-flash", hex(rom.FS_OFFSET + 0x3000), str(tmp_path / "fs.bin"), chip="esp32c3"))
    assert list(vb.flash.iterdir()) == []


def _serve(*args):
    return subprocess.run(
        [sys.executable, "-m", "tools.vboard", "serve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_serve_refuses_bad_options_in_one_line(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    p = _serve("--flash", str(flash), "--chip", "esp8266")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'esp8266'" in p.stderr and "Traceback" not in p.stderr
    p = _serve("--flash", str(flash), "--ima", "x.img")  # no abbreviations
    assert p.returncode == 2 and p.stderr.startswith(
        "vboard: error: unrecognized option(s) --ima (values not"
    )
    p = _serve("--flash", str(flash), "--wifii", "lab:S3cretPw", "--env", "NOEQUALSIGN")
    assert p.returncode == 2 and "S3cretPw" not in p.stderr and "--wifii" in p.stderr
    p = _serve("--flash", str(flash), "--env", "S3cretPw")
    assert p.returncode == 2 and "S3cretPw" not in p.stderr and "--env wants K=V" in p.stderr
    big = tmp_path / "big.img"
    big.write_bytes(b"\x00" * (rom.FLASH_SIZE + 1))
    p = _serve("--flash", str(flash), "--image", str(big))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "vboard: %s is larger than the %d-byte flash" % (big, rom.FLASH_SIZE)
    ]


@pytest.mark.parametrize("chip", sorted(CHIP_NAMES))
def test_each_board_has_its_own_mac_in_its_efuses(vboard, chip):
    # The mock gave every board of a chip one MAC: esptool could not tell two boards apart.
    macs = ["24:0a:c4:5e:00:01", "24:0a:c4:5e:00:02"]
    for mac in macs:
        vb = vboard(chip=chip, mac=mac)
        assert "MAC:                %s" % mac in ok(esptool(vb.url, "read-mac", chip=chip))
        # the same MAC that MicroPython's machine.unique_id() gives, as on a chip
        assert ok(vb.mpremote("exec", "import machine; print(machine.unique_id().hex(':'))")).strip() == mac
