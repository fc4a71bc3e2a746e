"""make demo-ota: an update over the air and a rollback, on one machine, for real.

The local platform emulator and a fresh virtual ESP32 (the MicroPython unix port behind a serial URL),
provisioned and deployed with the same tools as a real board (make demo's setup). Then, with the board
powered on the whole time:
  A  the deployed firmware comes online and reports its version (the package's, 0.3.0);
  B  the console pushes bundle B (make ota-package): the board downloads it over verified HTTPS, checks its
     MD5, unpacks it beside the running code, switches, resets, and comes back online at B (the inform seen);
  C  the console pushes bundle C, whose main.py resets before it comes online: after its trial boots the
     loader (boot.py) brings B back, and the board reports -1 "rolled back" and B again.
Prints a timeline in milliseconds, never a secret, and leaves nothing running.
"""

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tools import ota_package
from tools.board import firmware_modules
from tools.demo import _private, _run
from tools.emulator.process import EmulatorProcess
from tools.vboard import Board, BoardConfig
from tools.vboard.process import VBoardProcess

REPO = Path(__file__).resolve().parents[1]
PK = "a1DemoOta001"
MAC = "24:0a:c4:de:0a:01"
WIFI = ("demo-lab", "demo-lab-password")
A, B, C = "0.3.0", "1.1.0", "1.2.0"
BAD_MAIN = b"""# Bundle C: a build that never comes online (it resets first, as a crash or the trial timer
# would).
import machine

print("app C: broken build, resetting before it comes online")
machine.reset()
"""


class Timeline:
    def __init__(self):
        self.t0 = time.time()  # wall clock: the emulator stamps what it sees with time.time() too
        self.rows = []

    def add(self, who, text, at=None):
        ms = ((at or time.time()) - self.t0) * 1000
        self.rows.append((ms, who, text))
        print("demo: %8.0f ms  %-8s %s" % (ms, who, text), file=sys.stderr, flush=True)


_SHOWN = ("aliyun_iot: state online", "aliyun_iot: ota:", "app C:", "aliyun_iot: state registering",
          "aliyun_iot: connected")


async def _watch(flash, emu, dn, tl, packages):
    key = "%s/%s" % (PK, dn)
    partial = bytearray()

    def output(data):
        partial.extend(data)
        while b"\n" in partial:
            line, _, rest = bytes(partial).partition(b"\n")
            partial[:] = rest
            text = line.decode(errors="replace").strip()
            if text.startswith(_SHOWN):
                tl.add("board", text.replace("aliyun_iot: ", ""))

    def event(name, detail):
        if name == "reset":
            tl.add("board", "reset (%s): boot.py picks the bundle" % detail)

    seen = {"versions": [], "steps": [], "at": []}

    def poll():
        s = emu.registry().get("ota_seen", {}).get(key) or {"versions": [], "steps": [], "at": []}
        for at, what in s.get("at", [])[len(seen["at"]):]:
            tl.add("console", what, at)  # when the emulator saw it
        seen.update(versions=list(s["versions"]), steps=[list(x) for x in s["steps"]],
                    at=list(s.get("at", [])))
        return seen

    async def until(cond, what, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond(poll()):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("timed out after %d s waiting for %s" % (timeout, what))

    board = Board(BoardConfig(Path(flash), mac=MAC, wifi="%s:%s" % WIFI), on_output=output, on_event=event)
    tl.add("board", "power on (factory layout: /main.py, /lib/aliyun_iot)")
    await board.start()
    try:
        await until(lambda s: A in s["versions"], "version %s reported" % A, 90)
        tl.add("console", "push %s (%d bytes, MD5)" % (B, packages[B].stat().st_size))
        emu.cli("ota", "push", key, packages[B], "--version", B, "--sign-method", "MD5")
        await until(lambda s: s["versions"][-1:] == [B], "version %s reported" % B, 120)
        tl.add("console", "push %s (%d bytes, SHA256)" % (C, packages[C].stat().st_size))
        n = len(seen["steps"])
        emu.cli("ota", "push", key, packages[C], "--version", C, "--sign-method", "SHA256")
        await until(lambda s: any(st[0] == "-1" for st in s["steps"][n:]) and s["versions"][-1:] == [B],
                    "the rollback to %s" % B, 120)
    finally:
        await board.stop()
    return json.loads(emu.cli("ota", "status", key).stdout)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.demo_ota", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", metavar="DIR", help="keep the board's flash and the emulator state in DIR")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aliyun-demo-ota-"))
    tl = Timeline()
    emu = vb = None
    dn = firmware_modules()[0].device_name_from_mac(bytes(int(x, 16) for x in MAC.split(":")))
    try:
        emu = EmulatorProcess(work / "emulator", work / "emulator.log", [
            "--product", "%s=%s" % (PK, secrets.token_hex(12)), "--device", "%s/%s" % (PK, dn)])
        emu.start()
        tl.add("setup", "emulator up (MQTT/TLS %d, HTTPS %d)" % (emu.port, emu.https_port))
        ps_file = _private(work / "product_secret", emu.registry()["products"][PK]["ps"])
        wifi_file = _private(work / "wifi_password", WIFI[1])
        base = _private(work / "base.json", json.dumps({"ota_trial_boots": 2, "backoff_ms": 500}))
        flash = work / "flash"
        flash.mkdir()
        vb = VBoardProcess(flash, MAC, "%s:%s" % WIFI)
        # ca.der goes on first: provision checks that the file its config names is on the board.
        _run("tools.deploy", "--board", "VIRTUAL", "--port", vb.url, "--ca", emu.ca_der, "--no-reset")
        _run("tools.provision", "--board", "VIRTUAL", "--port", vb.url, "--config", base, "--product-key", PK,
             "--product-secret-file", ps_file, "--wifi-ssid", WIFI[0], "--wifi-password-file", wifi_file,
             "--host", "localhost", "--mqtt-port", emu.port, "--auth-host", "localhost", "--auth-port",
             emu.https_port, "--ca", emu.ca_der.name)
        vb.stop()
        vb = None
        tl.add("setup", "board %s provisioned and deployed with mpremote (boot.py is the OTA loader)" % dn)
        packages = {}
        for v, main_py in ((B, None), (C, work / "bad_main.py")):
            if main_py:
                main_py.write_bytes(BAD_MAIN)
            data = ota_package.build(v, ota_package.collect(mpy=True, main=main_py))
            packages[v] = work / ("app-%s.bin" % v)
            packages[v].write_bytes(data)
        tl.add("setup", "bundles %s and %s built (make ota-package, --mpy)" % (B, C))
        status = asyncio.run(_watch(flash, emu, dn, tl, packages))
        state = json.loads((flash / "ota" / "state").read_text())
    finally:
        if vb is not None:
            vb.stop()
        if emu is not None:
            emu.stop()
        if a.keep:
            shutil.copytree(work, a.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    print("\ntimeline (ms since the emulator started)")
    for ms, who, text in sorted(tl.rows, key=lambda r: r[0]):
        print("  %8.0f  %-8s %s" % (ms, who, text))
    print("\nconsole: versions reported %s; last step %s %s"
          % (" -> ".join(status["versions"]), status["step"], status["desc"]))
    print("board:   ota/state %s" % json.dumps(state, sort_keys=True))
    ok = status["versions"][-1] == B and status["step"] == "-1" and B in status["versions"] and \
        state.get("cur") == "a" and state.get("ver") == B
    if not ok:
        print("demo-ota: FAILED: the board is not back at %s after the rollback" % B, file=sys.stderr)
        return 1
    print("demo-ota: OK")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError) as e:
        print("demo-ota: %s" % e, file=sys.stderr)
        sys.exit(1)
