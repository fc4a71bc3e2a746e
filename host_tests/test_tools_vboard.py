"""The board tools through the real mpremote, against virtual boards (fixture `vboard`), and the whole
first-boot flow against the emulator: provision, deploy, register, status, backup, wipe, restore, and a
boot that connects without registering again; and a production-line batch of five boards."""

import csv
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest

from host_tests.plugins.esp_image import esp_image
from tools import board as B
from tools import flash as F

_, STORE, _ = B.firmware_modules()
PK = "a1TOOLS"
PS = "ToolsProductSecret0123"
SECRET = "DeviceSecretThatMustNeverShow0001"


def tool(module, *args, timeout=120, env=None):
    e = dict(os.environ)
    e.pop("ALIYUN_PRODUCT_SECRET", None)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *[str(a) for a in args]],
        cwd=B.REPO,
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ok(p):
    assert p.returncode == 0, "rc=%d\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
    return p


def secret_file(tmp_path, value=PS):
    f = tmp_path / "ps"
    f.write_text(value)
    os.chmod(f, 0o600)
    return f


def provision(url, psf, *extra, pk=PK):
    return tool("tools.provision", "--board", "VIRTUAL", "--port", url, "--product-key", pk,
                "--product-secret-file", psf, *extra)  # fmt: skip


def plant_credential(flash, dn, ds=SECRET, pk=PK):
    """What a first boot leaves on the flash: the firmware's own store encoding."""
    raw = STORE.encode({"kind": "secret", "pk": pk, "dn": dn, "ds": ds})
    (flash / B.CRED_PATH).write_bytes(raw)
    return raw


def test_deploy_copies_verifies_resets_and_the_board_boots(vboard):
    vb = vboard()
    stale = vb.flash / "lib" / "aliyun_iot"
    stale.mkdir(parents=True)
    (stale / "config.py").write_text("raise ImportError('stale source shadows the new .mpy')\n")
    p = ok(tool("tools.deploy", "--board", "VIRTUAL", "--port", vb.url))
    mpys = sorted(f.name for f in stale.iterdir())
    want = sorted(s.stem + ".mpy" for s in (B.FIRMWARE / "aliyun_iot").glob("*.py"))
    assert mpys == want  # the stale config.py is gone
    for name in ("main.py", "boot.py"):
        assert (vb.flash / name).read_bytes() == (B.FIRMWARE / name).read_bytes()
    assert "[%d/%d] main.py" % (len(want) + 2, len(want) + 2) in p.stderr
    assert "verified %d files" % (len(want) + 2) in p.stderr
    nbytes = sum(f.stat().st_size for f in stale.iterdir()) + sum(
        (vb.flash / n).stat().st_size for n in ("main.py", "boot.py")
    )
    n = len(want) + 2
    assert p.stdout.startswith("deployed %d files (%d bytes, %d copied) to %s" % (n, nbytes, n, vb.url))
    # reset: the firmware's main.py runs from the .mpy files and stops at the missing config
    vb.wait_console("aliyun_iot: fatal IotError code=config_missing", timeout=20)
    assert not list(vb.flash.glob("*.mpy")) and not (vb.flash / "config.json").exists()


def test_redeploy_copies_only_what_changed_and_no_package_keeps_lib(vboard, tmp_path):
    vb = vboard()
    ca = tmp_path / "ca.der"
    ca.write_bytes(b"\x30\x03\x02\x01\x00")
    pkg = vb.flash / "lib" / "aliyun_iot"
    pkg.mkdir(parents=True)
    (pkg / "frozen_leftover.py").write_text("# a file --no-package must not touch\n")
    (vb.flash / "main.py").write_bytes((B.FIRMWARE / "main.py").read_bytes())  # already up to date
    p = ok(
        tool("tools.deploy", "--board", "VIRTUAL", "--port", vb.url, "--no-package", "--ca", ca, "--no-reset")
    )
    assert "1 of 3 files already up to date" in p.stderr and "[1/2] ca.der" in p.stderr  # before main.py
    nbytes = sum(f.stat().st_size for f in (B.FIRMWARE / "main.py", B.FIRMWARE / "boot.py", ca))
    assert "(%d bytes, 2 copied)" % nbytes in p.stdout
    assert (vb.flash / "ca.der").read_bytes() == ca.read_bytes()
    assert [f.name for f in pkg.iterdir()] == ["frozen_leftover.py"]
    assert "aliyun_iot: state boot" not in vb.console()  # no reset asked, so main.py did not run


def test_provision_status_backup_restore_and_the_erase_guard(vboard, tmp_path):
    vb = vboard(mac="24:0a:c4:aa:00:01")
    dn = "esp32-240ac4aa0001"
    psf = secret_file(tmp_path)
    p = ok(provision(vb.url, psf, "--host", "127.0.0.1", "--mqtt-port", 8883))
    assert json.loads((vb.flash / "config.json").read_text()) == {
        "product_key": PK, "product_secret": PS, "host": "127.0.0.1", "port": 8883, "led_pin": 2}  # fmt: skip
    assert "device_name %s" % dn in p.stdout and PS not in p.stdout + p.stderr
    assert not (vb.flash / "config.json.tmp").exists()

    p = ok(tool("tools.cred", "status", "--port", vb.url))
    assert "mac: 240ac4aa0001" in p.stdout and "credential: none" in p.stdout and PS not in p.stdout

    raw = plant_credential(vb.flash, dn)
    p = ok(tool("tools.cred", "status", "--port", vb.url))
    assert (
        "credential: present %s/%s kind=secret DeviceSecret %s" % (PK, dn, B.fingerprint(SECRET)) in p.stdout
    )

    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(esp_image("esp32"))
    backups = tmp_path / "backups"
    p = tool("tools.flash", "--board", "ESP32_GENERIC", "--port", vb.url, "--firmware", firmware,
             "--backups", backups)  # fmt: skip
    assert p.returncode == 1 and "has no backup of it" in p.stderr and "flash: erase:" not in p.stderr

    p = ok(tool("tools.cred", "backup", "--port", vb.url, "--dir", backups))
    (path,) = backups.glob("*.cred")
    assert path.name == "%s.%s.240ac4aa0001.cred" % (PK, dn)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == raw
    assert "backed up in" in F.check_erase_allowed(B.Board(vb.url), backups)

    # provisioning this board as another device would orphan the stored credential
    p = provision(vb.url, psf, pk="a1OTHER")
    assert p.returncode == 1 and "orphan" in p.stderr
    assert json.loads((vb.flash / "config.json").read_text())["product_key"] == PK

    (vb.flash / B.CRED_PATH).unlink()
    p = ok(tool("tools.cred", "restore", "--port", vb.url, path))
    assert (vb.flash / B.CRED_PATH).read_bytes() == raw and not (vb.flash / "aliyun_iot.cred.tmp").exists()
    plant_credential(vb.flash, dn, ds="SomeOtherSecret")
    p = tool("tools.cred", "restore", "--port", vb.url, path)
    assert p.returncode == 1 and "pass --force" in p.stderr
    for out in (p.stdout, p.stderr):
        assert SECRET not in out and "SomeOtherSecret" not in out


def test_batch_of_five_boards_with_a_manifest(vboard, tmp_path):
    macs = ["24:0a:c4:bb:00:%02x" % i for i in range(1, 6)]
    boards = [vboard(mac=m) for m in macs]
    names = tmp_path / "names.csv"
    names.write_text("mac,device_name\n" + "".join("%s,line1-%04d\n" % (m, i) for i, m in enumerate(macs, 1)))
    manifest = tmp_path / "line1.csv"
    t0 = time.monotonic()
    p = ok(tool("tools.provision", "--batch", "--board", "VIRTUAL", "--ports", *[b.url for b in boards],
                "--product-key", PK, "--product-secret-file", secret_file(tmp_path), "--names", names,
                "--manifest", manifest))  # fmt: skip
    elapsed = time.monotonic() - t0
    rows = list(csv.DictReader(manifest.open()))
    assert [(r["port"], r["mac"], r["device_name"], r["result"]) for r in rows] == [
        (b.url, m.replace(":", ""), "line1-%04d" % i, "ok")
        for i, (b, m) in enumerate(zip(boards, macs, strict=True), 1)
    ]
    for i, b in enumerate(boards, 1):
        assert json.loads((b.flash / "config.json").read_text())["device_name"] == "line1-%04d" % i
    assert PS not in manifest.read_text() + p.stdout + p.stderr
    assert p.stdout.startswith("batch: 5 boards provisioned, 0 failed")
    print("batch of 5 virtual boards: %.1f s" % elapsed)


def _boot(flash, mac, until="online"):
    return tool("tools.vboard", "boot", "--flash", flash, "--mac", mac, "--until", until, "--timeout", 60)


@pytest.mark.slow
def test_full_flow_register_backup_wipe_restore_reconnect(vboard, emulator, tmp_path):
    mac = "24:0a:c4:cc:00:07"
    dn = "esp32-240ac4cc0007"
    emu = emulator(products={PK: PS}, devices=["%s/%s" % (PK, dn)])
    psf = secret_file(tmp_path)
    flash = tmp_path / "flash"
    flash.mkdir()

    def setup_board():
        vb = vboard(flash=flash, mac=mac)
        ok(tool("tools.deploy", "--board", "VIRTUAL", "--port", vb.url, "--ca", emu.ca_der, "--no-reset"))
        ok(provision(vb.url, psf, "--host", emu.host, "--mqtt-port", emu.port, "--ca", emu.ca_der.name))
        return vb

    vb = setup_board()
    vb.stop()  # one interpreter on a flash at a time: power the board on by itself
    first = ok(_boot(flash, mac))
    assert "aliyun_iot: state registered" in first.stdout and "aliyun_iot: state online" in first.stdout

    vb = vboard(flash=flash, mac=mac)
    status = ok(tool("tools.cred", "status", "--port", vb.url)).stdout
    assert "credential: present %s/%s kind=secret" % (PK, dn) in status
    backups = tmp_path / "backups"
    ok(tool("tools.cred", "backup", "--port", vb.url, "--dir", backups))
    vb.stop()

    shutil.rmtree(flash)  # the erase
    flash.mkdir()
    vb = setup_board()
    (path,) = backups.glob("*.cred")
    ok(tool("tools.cred", "restore", "--port", vb.url, path))
    vb.stop()
    second = ok(_boot(flash, mac))
    assert "aliyun_iot: credential found for %s/%s" % (PK, dn) in second.stdout
    assert "state registering" not in second.stdout and "aliyun_iot: state online" in second.stdout
    issued = emu.device(PK, dn)["secret"]
    assert STORE.decode((flash / B.CRED_PATH).read_bytes())["ds"] == issued  # the restored one is in use
    for out in (first.stdout, first.stderr, second.stdout, second.stderr, status, emu.log()):
        assert PS not in out and issued not in out


def test_provision_checks_the_ca_the_config_names_or_puts_it_there(vboard, tmp_path):
    vb = vboard(mac="24:0a:c4:aa:00:07")
    psf = secret_file(tmp_path)
    p = provision(vb.url, psf, "--ca", "ca.der")  # a path on the board, where nothing is
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "provision: error: the config names ca ca.der, which the board does not hold: it would stop at its "
        "first boot (code=config); put it there with --ca LOCAL_FILE (or make deploy CA=LOCAL_FILE), or drop "
        "the ca key to trust the built-in roots"
    ]
    assert not (vb.flash / "config.json").exists()
    ca = tmp_path / "my-ca.der"
    ca.write_bytes(b"\x30\x03\x02\x01\x00")
    p = ok(provision(vb.url, psf, "--ca", ca))  # a local file: put on the board at ca.der
    assert "provision: %s: %s put at ca.der (5 bytes, sha256 checked)" % (vb.url, ca) in p.stderr
    assert (vb.flash / "ca.der").read_bytes() == ca.read_bytes()
    assert json.loads((vb.flash / "config.json").read_text())["ca"] == "ca.der"
    ok(provision(vb.url, psf, "--ca", "ca.der"))  # now the board holds it


def test_port_errors_say_what_is_wrong_in_text(vboard, tmp_path):
    # mpremote says "it may be in use by another program" for a missing port and a refused socket
    # alike, and a board that does not answer came out as Python bytes (b'\r\n...').
    missing = tmp_path / "ttyUSB9"
    p = tool("tools.cred", "status", "--port", missing)
    assert p.stderr.strip().splitlines() == [
        "cred: error: no such port %s (is the board plugged in? list ports: "
        "python -m serial.tools.list_ports)" % missing
    ]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = "socket://127.0.0.1:%d" % s.getsockname()[1]
    p = tool("tools.deploy", "--board", "VIRTUAL", "--port", closed, "--no-package")
    assert p.stderr.strip().splitlines()[-1] == (
        "deploy: error: connection refused by %s (is the virtual board running on that port?)" % closed
    )
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n"
        "        print('app: busy, ignoring Ctrl-C')\n"
    )
    vb = vboard(flash=flash)
    vb.wait_console("", timeout=5)
    p = tool("tools.cred", "status", "--port", vb.url)
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(
        "cred: error: the board on %s does not answer (mpremote could not enter the raw REPL; its console "
        "last said: app: busy, ignoring Ctrl-C" % vb.url
    ), line
    assert "b'" not in line and "\\r" not in line
    assert B.port_error(OSError(16, "Device or resource busy")) == "busy: another program has it open"
