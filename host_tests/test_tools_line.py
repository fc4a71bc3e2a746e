"""tools/line.py: the production line over many ports at once. 8 virtual boards against the emulator,
one of which cannot register: 7 ok rows and 1 failed row with its MAC, DeviceName and reason; a re-run
completes only that one. Plus the pieces: ports from globs and files, the progress lines."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from host_tests.plugins.esp_image import esp_image
from tools import board as B
from tools import line as L

PK = "a1LineTest"
PS = "LineProductSecret0123"
WIFI = ("line-net", "LineWifiPassw0rd")
_CONFIG, _, _ = B.firmware_modules()


def run_line(*args):
    return subprocess.run(
        [sys.executable, "-m", "tools.line", "--board", "VIRTUAL", *map(str, args)],
        cwd=B.REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
def test_eight_boards_in_parallel_one_fails_and_a_rerun_completes_only_it(
    vboard, emulator, tmp_path, secret_guard, record_property
):
    macs = ["24:0a:c4:1e:00:%02x" % i for i in range(1, 9)]
    dns = [_CONFIG.device_name_from_mac(bytes.fromhex(m.replace(":", ""))) for m in macs]
    bad = 5  # its device is not added in the console (emulator): registration is refused
    emu = emulator(products={PK: PS}, devices=["%s/%s" % (PK, dn) for i, dn in enumerate(dns) if i != bad])
    secret_guard.secret(PS, WIFI[1])
    boards = [vboard(mac=m, wifi="%s:%s" % WIFI) for m in macs]
    cfg = tmp_path / "product.json"
    cfg.write_text(json.dumps({"product_key": PK, "product_secret": PS, "host": emu.host, "port": emu.port,
                               "wifi_ssid": WIFI[0], "wifi_password": WIFI[1]}))  # fmt: skip
    os.chmod(cfg, 0o600)
    manifest, backups = tmp_path / "line1.csv", tmp_path / "backups"
    args = ("--ports", *[b.url for b in boards], "--config", cfg, "--ca", emu.ca_der,
            "--manifest", manifest, "--backups", backups)  # fmt: skip

    t0 = time.monotonic()
    p = run_line(*args)
    elapsed = time.monotonic() - t0
    secret_guard.output(p.stdout, p.stderr, manifest.read_text(), emu.log())
    assert p.returncode == 1, p.stderr
    assert p.stdout.startswith("line: 7 ok, 1 failed, 0 already done, 0 interrupted, of 8 ports")
    assert p.stderr.strip().splitlines()[-1] == "line: error: 1 of 8 boards failed; see %s" % manifest
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 8 and tuple(rows[0]) == L.FIELDS
    by_mac = {r["mac"]: r for r in rows}
    assert sorted(by_mac) == sorted(m.replace(":", "") for m in macs)
    failed = by_mac[macs[bad].replace(":", "")]
    assert failed["device_name"] == dns[bad] and failed["port"] == boards[bad].url
    assert failed["stage"] == "boot" and failed["result"].startswith(
        "failed: boot: fatal IotError code=connack"
    )
    for i, m in enumerate(macs):
        r = by_mac[m.replace(":", "")]
        if i != bad:
            assert (r["result"], r["device_name"], r["port"]) == ("ok", dns[i], boards[i].url)
            assert r["backup"].endswith("%s.%s.%s.cred" % (PK, dns[i], m.replace(":", "")))
            assert emu.device(PK, dns[i])["activated"]
            stored = (boards[i].flash / B.CRED_PATH).read_bytes()
            assert (backups / os.path.basename(r["backup"])).read_bytes() == stored
    assert not (boards[bad].flash / B.CRED_PATH).exists()
    # one progress line per port (stderr is not a terminal here: each change is its own line)
    for i, b in enumerate(boards):
        assert "line: [%d/8] %s" % (i + 1, b.url) in p.stderr
    record_property(
        "measure",
        "line: 8 virtual boards in parallel: %.1f s, %.0f boards/hour" % (elapsed, 7 * 3600 / elapsed),
    )

    emu.add_device(PK, dns[bad])  # the operator adds the device in the console; the line runs again
    p = run_line(*args)
    secret_guard.output(p.stdout, p.stderr, manifest.read_text())
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("line: 1 ok, 0 failed, 7 already done, 0 interrupted, of 8 ports")
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 9
    assert (rows[-1]["mac"], rows[-1]["device_name"], rows[-1]["result"]) == (
        macs[bad].replace(":", ""), dns[bad], "ok")  # fmt: skip
    assert emu.device(PK, dns[bad])["registrations"] == 1
    assert all(emu.device(PK, dn)["registrations"] == 1 for dn in dns)  # nobody registered twice


def test_ports_from_globs_and_a_file(tmp_path):
    for n in ("ttyUSB0", "ttyUSB1", "ttyACM0"):
        (tmp_path / n).write_text("")
    f = tmp_path / "ports.txt"
    f.write_text("# station 1\nsocket://127.0.0.1:7001\n\n%s/ttyACM*  # the S3\n" % tmp_path)
    got = L.expand_ports([str(tmp_path / "ttyUSB*")], f)
    assert got == [str(tmp_path / "ttyUSB0"), str(tmp_path / "ttyUSB1"), "socket://127.0.0.1:7001",
                   str(tmp_path / "ttyACM0")]  # fmt: skip
    with pytest.raises(B.ToolError, match="no port matches"):
        L.expand_ports([str(tmp_path / "ttyXYZ*")])
    with pytest.raises(B.ToolError, match="listed twice"):
        L.expand_ports(["a", "a"])
    with pytest.raises(B.ToolError, match="cannot read ports file"):
        L.expand_ports([], tmp_path / "none.txt")


def test_progress_is_one_line_per_port():
    out = io.StringIO()
    pr = L.Progress(["socket://a", "b"], stream=out)
    pr.set(0, "deploy")
    pr.set(0, "deploy")  # unchanged: not printed again
    pr.set(1, "provision\nsecond line")
    assert out.getvalue().splitlines() == [
        "line: [1/2] socket://a deploy",
        "line: [2/2] b          provision second line",
    ]

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    pr = L.Progress(["a", "b"], stream=tty)
    pr.set(0, "x")
    pr.set(1, "y")
    # redrawn in place: the cursor goes back up over the 2 lines before the second drawing
    assert tty.getvalue().count("\x1b[2F") == 1 and tty.getvalue().endswith(
        "\x1b[2Ka y\n".replace("a y", "[2/2] b y")
    )


def test_line_errors_are_one_line_before_any_board(tmp_path):
    cut = tmp_path / "cut.bin"  # a download whose app image is cut 5 KB short: no board is touched
    cut.write_bytes(esp_image("esp32", app_size=12 * 1024)[: -5 * 1024])
    cfg = tmp_path / "p.json"
    cfg.write_text(json.dumps({"product_key": PK, "product_secret": PS}))
    os.chmod(cfg, 0o600)
    for extra, why in (
        (("--manifest", tmp_path / "no" / "m.csv"), "does not exist"),
        (("--manifest", tmp_path), "is a folder"),
        (("--backups", cfg), "is a file"),
        (("--board", "ESP32_GENERIC", "--firmware", tmp_path / "none.bin"), "cannot read firmware"),
        (("--board", "ESP32_GENERIC", "--firmware", tmp_path), "cannot read firmware"),
        (
            ("--board", "ESP32_GENERIC", "--firmware", cut),
            "is damaged or incomplete: its app image at 0x10000",
        ),
        (("--firmware", cut), "board VIRTUAL has no esptool chip: nothing to flash (drop --firmware)"),
    ):
        p = run_line("--ports", "socket://127.0.0.1:9", "--config", cfg, *extra)
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert why in p.stderr and PS not in p.stderr + p.stdout


def test_a_board_without_micropython_is_flashed_only_as_a_new_board(monkeypatch, tmp_path):
    # It cannot be checked for a credential: the line refuses to erase it unless told the boards are new.
    line = L.Line.__new__(L.Line)
    line.settings = {"name": "VIRTUAL"}
    runs = []

    def fake_run(argv, **kw):
        runs.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(L.subprocess, "run", fake_run)
    for new_boards in (False, True):
        line.a = L.parse_args(
            ["--ports", "x", "--config", "c.json", "--firmware", "fw.bin", "--backups", str(tmp_path)]
            + (["--new-boards"] if new_boards else [])
        )
        if not new_boards:
            with pytest.raises(B.ToolError, match="--new-boards"):
                line._flash(None, "socket://x", {"mac": None})
            assert runs == []
        else:
            line._flash(None, "socket://x", {"mac": None})
            assert runs[-1][runs[-1].index("--port") + 1] == "socket://x" and "--force" in runs[-1]


def _config(tmp_path, host="127.0.0.1", port=1, **more):
    cfg = tmp_path / "product.json"
    cfg.write_text(json.dumps({"product_key": PK, "product_secret": PS, "host": host, "port": port, **more}))
    os.chmod(cfg, 0o600)
    return cfg


def _names(path, pairs):
    path.write_text("mac,device_name\n" + "".join("%s,%s\n" % p for p in pairs))
    return path


def _rows(manifest):
    return list(csv.DictReader(manifest.open()))


@pytest.mark.slow
def test_a_reflash_of_done_boards_restores_their_credential_and_none_registers_twice(
    vboard, emulator, tmp_path, secret_guard
):
    # Two boards through the line with pre-registered names; then the same boards again with FIRMWARE=,
    # a new manifest and a names CSV that names them otherwise: the line used to erase them and register
    # them again, which an activated device cannot (connack4), locking them out.
    macs = ["24:0a:c4:2e:00:01", "24:0a:c4:2e:00:02"]
    hexes = [m.replace(":", "") for m in macs]
    dns = ["line-dev-1", "line-dev-2"]
    emu = emulator(products={PK: PS}, devices=["%s/%s" % (PK, dn) for dn in dns])
    secret_guard.secret(PS, WIFI[1])
    boards = [vboard(mac=m, wifi="%s:%s" % WIFI) for m in macs]
    cfg = _config(tmp_path, emu.host, emu.port, wifi_ssid=WIFI[0], wifi_password=WIFI[1])
    backups = tmp_path / "backups"
    common = ("--board", "ESP32_GENERIC", "--ports", *[b.url for b in boards], "--config", cfg,
              "--ca", emu.ca_der, "--backups", backups)  # fmt: skip
    names1 = _names(tmp_path / "names1.csv", zip(hexes, dns, strict=True))
    # board 1 holds our main.py cut at 1 KB (a copy that was interrupted): replaced, and it comes online
    (boards[0].flash / "main.py").write_bytes((B.FIRMWARE / "main.py").read_bytes()[:1024])
    p = run_line(*common, "--names", names1, "--manifest", tmp_path / "m1.csv")
    assert p.returncode == 0, p.stderr
    assert "%s the board's main.py is ours cut short (the first 1024 of" % boards[0].url in p.stderr
    assert (boards[0].flash / "main.py").read_bytes() == (B.FIRMWARE / "main.py").read_bytes()
    creds = [(b.flash / B.CRED_PATH).read_bytes() for b in boards]

    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp_image("esp32"))
    names2 = _names(tmp_path / "names2.csv", zip(hexes, ["other-1", "other-2"], strict=True))
    p = run_line(*common, "--names", names2, "--manifest", tmp_path / "m2.csv", "--firmware", fw)
    secret_guard.output(p.stdout, p.stderr, (tmp_path / "m2.csv").read_text(), emu.log())
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("line: 2 ok, 0 failed, 0 already done, 0 interrupted, of 2 ports")
    rows = {r["mac"]: r for r in _rows(tmp_path / "m2.csv")}
    for i, b in enumerate(boards):
        r = rows[hexes[i]]
        assert r["result"] == "ok: reflashed, credential restored, online with the same DeviceSecret"
        assert r["device_name"] == dns[i]  # the credential's name, not the new CSV's
        assert "filesystem erased" in b.console()  # really flashed (erase-flash went through the ROM)
        assert (b.flash / B.CRED_PATH).read_bytes() == creds[i]
        assert json.loads((b.flash / "config.json").read_text())["device_name"] == dns[i]
        d = emu.device(PK, dns[i])
        assert d["activated"] and d["registrations"] == 1
        assert b.console().count("aliyun_iot: state online") >= 2
    assert not emu.device(PK, "other-1")  # nobody registered under the new names

    # and without FIRMWARE=: a board that holds this product's credential is done, whatever the manifest
    p = run_line(*common, "--names", names2, "--manifest", tmp_path / "m3.csv")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("line: 0 ok, 0 failed, 2 already done, 0 interrupted, of 2 ports")
    rows = {r["mac"]: r for r in _rows(tmp_path / "m3.csv")}
    for i, b in enumerate(boards):
        assert rows[hexes[i]]["result"] == "done: holds the credential of %s/%s, backed up; not touched" % (
            PK, dns[i])  # fmt: skip
        assert (b.flash / B.CRED_PATH).read_bytes() == creds[i]
        assert emu.device(PK, dns[i])["registrations"] == 1

    # a board erased by other means (its files gone) whose backup the line holds: restored, not registered
    for f in list(boards[1].flash.iterdir()):
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    p = run_line(*common, "--names", names2, "--manifest", tmp_path / "m4.csv")
    assert p.returncode == 0, p.stderr
    rows = {r["mac"]: r for r in _rows(tmp_path / "m4.csv")}
    assert (
        rows[hexes[1]]["result"]
        == "ok: credential restored from its backup, online with the same DeviceSecret"
    )
    assert (boards[1].flash / B.CRED_PATH).read_bytes() == creds[1]
    assert emu.device(PK, dns[1])["registrations"] == 1


def test_a_board_whose_main_py_raises_is_failed_at_once_with_the_exception(vboard, tmp_path):
    # The first-boot watch used to wait out its whole timeout (90 s) after a traceback and the prompt.
    vb = vboard(mac="24:0a:c4:2e:00:09")
    (vb.flash / "main.py").write_text("print('app')\nraise ValueError('boom at once')\n")
    manifest = tmp_path / "m.csv"
    t0 = time.monotonic()
    p = run_line("--ports", vb.url, "--config", _config(tmp_path), "--manifest", manifest, "--no-package",
                 "--backups", tmp_path / "backups")  # fmt: skip
    elapsed = time.monotonic() - t0
    assert p.returncode == 1
    (row,) = _rows(manifest)
    assert row["stage"] == "boot" and float(row["seconds"]) < 20 and elapsed < 40
    assert row["result"] == "failed: boot: main.py stopped with ValueError: boom at once, at the REPL prompt"


def test_boot_watch_ends_at_the_first_sign_of_a_dead_boot():
    notes = []
    w = L.BootWatch(notes.append)
    assert w.line("aliyun_iot: state wifi") is None and w.line("aliyun_iot: state online") == "online"
    w = L.BootWatch(notes.append)
    for text in (
        "Traceback (most recent call last):",
        '  File "main.py", line 3, in <module>',
        "OSError: [Errno 2] ENOENT",
        "MicroPython v1.25.0 on 2025-04-15; ESP32",
        'Type "help()" for more',
    ):
        w.line(text)  # fmt: skip
    with pytest.raises(B.ToolError, match=r"^main.py stopped with OSError: \[Errno 2\] ENOENT, at the REPL"):
        w.prompt()
    L.BootWatch(notes.append).prompt()  # a prompt without a traceback: nothing to say yet
    w = L.BootWatch(notes.append)
    with pytest.raises(B.ToolError, match="^fatal IotError code=config: bad key"):
        w.line("aliyun_iot: fatal IotError code=config: bad key")
    w = L.BootWatch(notes.append)
    w.line("ets Jul 29 2019 12:21:46")
    w.line("rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)")
    w.line("vboard: interpreter exited with code 1; rebooting")
    with pytest.raises(B.ToolError, match="^reset loop: 3 resets before online"):
        w.line("rst:0x8 (TG1WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)")


def test_ctrl_c_records_boards_interrupted_at_their_stage_and_a_rerun_continues_them(vboard, tmp_path):
    # Ctrl-C reaches the whole foreground process group (the line, and any mpremote it did not detach).
    # Interrupted boards used to be recorded `failed`, with reasons such as `MAC=240ac4000008`.
    vb = vboard(mac="24:0a:c4:2e:00:0c")
    (vb.flash / "main.py").write_text("import time\nprint('app: waiting')\nwhile True:\n    time.sleep(1)\n")
    manifest = tmp_path / "m.csv"
    args = ("--ports", vb.url, "--config", _config(tmp_path), "--manifest", manifest, "--no-package",
            "--backups", tmp_path / "backups")  # fmt: skip
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.line", "--board", "VIRTUAL", *map(str, args)],
            cwd=B.REPO, stdout=subprocess.PIPE, stderr=f, text=True, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "first boot" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err.read_text()
    assert proc.returncode == 130, stderr
    assert "line: Ctrl-C: each board ends the step it is in and is recorded `interrupted`" in stderr
    assert stderr.strip().splitlines()[-1] == (
        "line: interrupted: 1 board(s) stopped between two steps; run the same command again to continue them"
    )
    assert out.startswith("line: 0 ok, 0 failed, 0 already done, 1 interrupted, of 1 ports")
    (row,) = _rows(manifest)
    assert (row["mac"], row["result"], row["stage"]) == ("240ac42e000c", "interrupted", "boot")
    # the same command continues it: not skipped, through deploy and provision to its first boot again
    p = run_line(*args, "--boot-timeout", "3")
    assert p.returncode == 1
    assert _rows(manifest)[-1]["result"].startswith("failed: boot: not online within 3 s")
