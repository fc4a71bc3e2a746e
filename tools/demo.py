"""make demo: a whole first boot on one machine, for real.

Starts the local platform emulator with a demo product, makes a fresh virtual ESP32 (the MicroPython unix port
behind a serial URL), provisions its config.json and deploys the firmware onto it with mpremote (the same
tools as for a real board), then powers it on: it registers, persists its DeviceSecret, connects with it and
posts a property, which the platform acknowledges (both shown from the emulator's message log). It powers it
on again to show that registration is skipped. Prints a timeline in milliseconds, never a secret, and leaves
nothing running.
"""

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.board import firmware_modules
from tools.emulator.console import format_row
from tools.emulator.process import EmulatorProcess
from tools.vboard import boot
from tools.vboard.process import VBoardProcess

REPO = Path(__file__).resolve().parents[1]

PK = "a1DemoProd01"
MAC = "24:0a:c4:de:00:01"
WIFI = ("demo-lab", "demo-lab-password")


class Step:
    def __init__(self):
        self.t0 = time.monotonic()
        self.rows = []

    def __call__(self, label, fn, *args, **kw):
        t = time.monotonic()
        print("demo: %s ..." % label, file=sys.stderr, flush=True)
        out = fn(*args, **kw)
        self.rows.append((label, (time.monotonic() - t) * 1000))
        return out


def _private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _run(tool, *args):
    r = subprocess.run(
        [sys.executable, "-m", tool, *map(str, args)], cwd=REPO, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (tool, (r.stderr or r.stdout).strip().splitlines()[-1:]))
    return r.stdout


def Board(flash):
    """`python -m tools.vboard serve` for the mpremote steps: a serial URL like a USB port's."""
    return VBoardProcess(flash, MAC, "%s:%s" % WIFI)


def _power_on(flash, label):
    r = boot(flash, until="online", timeout=60, mac=MAC, wifi="%s:%s" % WIFI)
    if not r.ok:
        raise RuntimeError("%s did not come online: %s" % (label, r.reason))
    return r


def _print_boot(title, r):
    print("\n%s (%d ms from power-on to online)" % (title, r.elapsed_ms))
    prev = 0.0
    for s in r.states:
        print("  %8.0f ms  %-12s +%.0f" % (s.ms, s.name, s.ms - prev))
        prev = s.ms
    for _ms, text in r.lines:
        if "registration skipped" in text or "credential secret stored" in text:
            print("  " + text.strip())


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--keep", metavar="DIR", help="keep the board's flash and the emulator state in DIR")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aliyun-demo-"))
    step = Step()
    emu = board = None
    fw_config = firmware_modules()[0]  # the firmware's own naming rule, on the host
    dn = fw_config.device_name_from_mac(bytes(int(x, 16) for x in MAC.split(":")))
    try:
        emu = EmulatorProcess(
            work / "emulator",
            work / "emulator.log",
            ["--product", "%s=%s" % (PK, secrets.token_hex(12)), "--device", "%s/%s" % (PK, dn)],
        )
        step("start the platform emulator", emu.start)
        ps_file = _private(work / "product_secret", _product_secret(emu))
        wifi_file = _private(work / "wifi_password", WIFI[1])
        flash = work / "flash"
        flash.mkdir()
        board = step("start a fresh virtual board (MAC %s)" % MAC, Board, flash)
        step(
            "deploy the firmware with mpremote",
            _run,
            "tools.deploy",
            "--board",
            "VIRTUAL",
            "--port",
            board.url,
            "--ca",
            emu.ca_der,
            "--no-reset",
        )
        step(
            "provision config.json (DeviceName %s)" % dn,
            _run,
            "tools.provision",
            "--board",
            "VIRTUAL",
            "--port",
            board.url,
            "--product-key",
            PK,
            "--product-secret-file",
            ps_file,
            "--wifi-ssid",
            WIFI[0],
            "--wifi-password-file",
            wifi_file,
            "--host",
            "localhost",
            "--mqtt-port",
            emu.port,
            "--ca",
            emu.ca_der.name,
        )
        step("release the serial port", board.stop)
        first = step("first power-on: register, persist, connect, post", _power_on, flash, "first boot")
        post = _post_and_ack(emu, "%s/%s" % (PK, dn))
        status = _run("tools.cred", "status", "--board", "VIRTUAL", "--port", _serve_again(flash, step))
        second = step("second power-on: connect with the stored secret", _power_on, flash, "second boot")
        dev = emu.device(PK, dn)
    finally:
        if board is not None:
            board.stop()
        for b in _BOARDS:
            b.stop()
        if emu is not None:
            emu.stop()
        if a.keep:
            shutil.copytree(work, a.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    print("\nsetup")
    for label, ms in step.rows[:5]:
        print("  %8.0f ms  %s" % (ms, label))
    _print_boot("first boot", first)
    print("\nthe first boot's property post and its acknowledgement (tools.emulator messages --all):")
    for row in post:
        print("  " + format_row(row))
    print("\nboard status (tools.cred status):")
    print("  " + "\n  ".join(status.strip().splitlines()))
    _print_boot("second boot", second)
    registering = [s for s in second.states if s.name == "registering"]
    print(
        "\nemulator: %s/%s activated=%s, registrations=%d; second boot registered again: %s"
        % (PK, dn, dev["activated"], dev["registrations"], "yes" if registering else "no")
    )
    if registering or dev["registrations"] != 1:
        print("demo: FAILED: the second boot registered again", file=sys.stderr)
        return 1
    print("demo: OK")
    return 0


_BOARDS = []


def _serve_again(flash, step):
    board = step("serve the board again for tools.cred status", Board, flash)
    _BOARDS.append(board)
    return board.url


def _post_and_ack(emu, key):
    """The device's first property post and the platform's reply to it, from the emulator's message log."""
    deadline = time.monotonic() + 5
    while True:
        rows = json.loads(emu.cli("messages", key, "--all", "--json").stdout)[::-1]  # oldest first
        post = next((m for m in rows if m["dir"] == "up" and m["topic"].endswith("/property/post")), None)
        ack = next((m for m in rows if m["dir"] == "down" and m["topic"].endswith("/post_reply")), None)
        if post and ack:
            return post, ack
        if time.monotonic() > deadline:
            raise RuntimeError("the emulator recorded no property post with its reply for %s" % key)
        time.sleep(0.05)


def _product_secret(emu):
    return emu.registry()["products"][PK]["ps"]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError) as e:
        print("demo: %s" % e, file=sys.stderr)
        sys.exit(1)
