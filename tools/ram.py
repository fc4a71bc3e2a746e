"""RAM on the MicroPython unix port: what this package costs next to a bare umqtt.simple TLS connection.

Three runs, each against the local emulator over verified TLS, each with the package and the board shims as
mpy-cross bytecode (as a board loads them: tools.devrun.compile_firmware):
  baseline  tools/devrun/baseline.py: Wi-Fi up, umqtt.simple over verified TLS, CONNECT, one property post
            and its reply, nothing of this package;
  normal    a boot with the credential stored (tools/devrun/boot_once.py);
  first     a first boot: registration, the credential stored, then the same.
For each: the smallest -X heapsize from which it comes online, found in steps of STEP bytes and checked up
to 3 KiB above (reported in KiB), and HELD,
the heap still allocated once online after gc.collect(). The first boot also reports whether first-boot code
is still held.
Used by `make bench` (the numbers) and by the RAM test (the ratios as limits).
"""

import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from tools.devrun import BOOT_ONCE, board_flash, boot, compile_firmware, run_script
from tools.emulator.process import EmulatorProcess
from tools.emulator.sign import sign

BASELINE = Path(__file__).resolve().parent / "devrun" / "baseline.py"
PK, PS = "a1RamProbe1", "RamProbeProductSecret01"
TIMESTAMP = "2524608000000"
# Heaps are measured in steps of STEP bytes (4 heap blocks of the 64-bit port), each edge checked up to WINDOW
# bytes above: a whole KiB step would round the baseline and the package each up by up to 1 KiB, and move
# their ratio by up to 0.04.
STEP = 128
WINDOW = 3072
# The Wi-Fi shim joins at once: a join that takes a few polls leaves as much garbage as the clock allowed
# polls, and moved the 32-bit port's edges by up to 256 bytes from one run to the next.
_ENV = {"VBOARD_WIFI_DELAY_MS": "0"}


def _held(stdout):
    for line in stdout.splitlines():
        if line.startswith("HELD "):
            return int(line[5:])
    return None


def smallest(run, lo=2048, hi=262144, window=WINDOW, step=STEP):
    """The smallest heap in bytes (a multiple of step) with which run(heap) comes online, and with each
    step up to `window` bytes above it too (None: not even hi). The edge is not monotonic: the heap's
    fragmentation decides whether an allocation of a few hundred bytes finds room, so a larger heap can
    fail where a smaller one passed. A binary search finds an edge; the answer is moved above any failure
    near it."""
    if not run(hi)[0]:
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        lo, hi = (lo, mid) if run(mid)[0] else (mid, hi)
    while True:
        bad = [h for h in range(hi + step, hi + window + 1, step) if not run(h)[0]]
        if not bad:
            return hi
        hi = bad[-1] + step
        while not run(hi)[0]:
            hi += step


class RamProbe:
    """An emulator and the compiled firmware in `work`; start() before use, stop() after.

    exe: another build of the unix port for the measured runs (the credential is always obtained with the
    installed one, over TLS); tls=False: the measured runs use plain MQTT, for a build without TLS (no first
    boot then: registration is TLS only); frozen: the package and the shims are frozen into exe, so the runs
    have no lib/ and no shims on their path."""

    def __init__(self, work, exe=None, tls=True, frozen=False):
        self.work = Path(work)
        self.lib, self.shims = compile_firmware(self.work / "mpy")
        self.emu = EmulatorProcess(self.work / "state", self.work / "emulator.log",
                                   ["--product", "%s=%s" % (PK, PS), "--register-linger", "2"])
        self.n = 0
        self._normal = None
        self.exe, self.tls = exe, tls
        if frozen:
            (self.work / "empty").mkdir(exist_ok=True)
            self._path, self._shims = [], str(self.work / "empty")
        else:
            self._path, self._shims = ["lib"], "shims"

    def start(self):
        # The boards' flash directories, at a path of the same length wherever `work` is: the unix port
        # interns the directory of the script it runs (sys.path[0]; a board's is ""), and a longer path
        # moved the edges by up to 128 bytes between a pytest tmp_path, make bench and python -m tools.ram.
        self.flashes = Path(tempfile.mkdtemp(prefix="ram-", dir="/tmp"))
        self.emu.start()
        return self

    def stop(self):
        self.emu.stop()
        shutil.rmtree(self.flashes, ignore_errors=True)

    def _device(self, prefix):
        self.n += 1
        dn = "%s-%04d" % (prefix, self.n)
        self.emu.add_device(PK, dn)
        return dn

    def _flash(self, dn):
        flash = self.flashes / dn
        flash.mkdir()
        board_flash(self.emu, flash, product_key=PK, product_secret=PS, device_name=dn, ntp=False, timeout=10,
                    attempts=1, wdt_s=0)
        # As on a board: the package in /lib, its file names (interned when a module is imported) that short.
        shutil.copytree(self.lib, flash / "lib")
        shutil.copytree(self.shims, flash / "shims")
        # The scripts run from the flash under short names: a script's path is interned, and the same name
        # on every machine keeps the heap the same wherever the repository lies.
        shutil.copy(BOOT_ONCE, flash / "boot_once.py")
        shutil.copy(BASELINE, flash / "baseline.py")
        return flash

    def _boot(self, flash, heap, args=(), script="boot_once.py", env=None):
        # script: a file in the flash (tools/tlsmem copies its probe there); env: more variables.
        return boot("micropython", flash, heapsize=str(heap), path=self._path, shims=self._shims,
                    timeout=60, args=args, exe=self.exe, script=Path(script), env={**_ENV, **(env or {})})

    def baseline(self, heap):
        """(online?, held bytes) of the bare umqtt.simple connection."""
        if self._normal is None:
            self._prepare_normal()
        dn, ds = self._baseline_identity
        ident = "%s.%s" % (PK, dn)
        pw = sign("hmacsha256", ds, {"clientId": ident, "deviceName": dn, "productKey": PK,
                                     "timestamp": TIMESTAMP})
        mode = 2 if self.tls else 3
        cid = "%s|securemode=%d,signmethod=hmacsha256,timestamp=%s|" % (ident, mode, TIMESTAMP)
        topic = "/sys/%s/%s/thing/event/property/post" % (PK, dn)
        args = ["localhost", self.emu.port if self.tls else self.emu.tcp_port,
                "emulator_ca.der" if self.tls else "-", cid, "%s&%s" % (dn, PK), pw, topic]
        r = run_script("micropython", Path("baseline.py"), cwd=self._normal, heapsize=str(heap),
                       path=self._path, shims=self._shims, timeout=60, args=args, exe=self.exe, env=_ENV)
        ok = "RESULT online" in r.stdout
        return ok, _held(r.stdout) if ok else None

    def _prepare_normal(self):
        dn = self._device("normal")
        flash = self._flash(dn)
        b = boot("micropython", flash, heapsize="1024K", path=["lib"], shims="shims", timeout=60)
        if b.result != "online":
            raise RuntimeError("first boot for the probe failed: %s\n%s" % (b.result, b.stdout[-2000:]))
        if not self.tls:
            cfg = json.loads((flash / "config.json").read_text())
            cfg.update(tls=False, port=self.emu.tcp_port)
            (flash / "config.json").write_text(json.dumps(cfg))
        self._normal = flash
        self._baseline_identity = (dn, self.emu.device(PK, dn)["secret"])

    def normal(self, heap):
        """(online?, held bytes) of a boot with the credential stored."""
        if self._normal is None:
            self._prepare_normal()
        b = self._boot(self._normal, heap)
        return b.result == "online", _held(b.stdout)

    def reconnect(self, heap):
        """(online?, held bytes) of a normal boot whose link is then dropped and connected again: the
        device's worst case in the field, a reconnection with the session and the application resident."""
        if self._normal is None:
            self._prepare_normal()
        b = self._boot(self._normal, heap, ("reconnect",))
        return b.result == "online" and "connected (connection 2)" in b.stdout, _held(b.stdout)

    def first(self, heap):
        """(online?, held bytes, first-boot modules still held after online) of a first boot."""
        if not self.tls:
            raise ValueError("a first boot registers over TLS: not measured with tls=False")
        dn = self._device("first")
        flash = self._flash(dn)
        try:
            b = self._boot(flash, heap)
        finally:
            shutil.rmtree(flash, ignore_errors=True)
        held_code = [ln.split()[1] for ln in b.stdout.splitlines() if ln.startswith("FIRST-BOOT ")]
        return b.result == "online", _held(b.stdout), held_code

    def online_from(self, run, heap, window=WINDOW, step=STEP):
        """True when run comes online with heap bytes and with each step up to `window` bytes above it (see
        smallest)."""
        return all(run(h)[0] for h in range(heap, heap + window + 1, step))

    def smallest(self, run, lo=2048, hi=262144, window=WINDOW, step=STEP):
        """smallest(), this probe's runs."""
        return smallest(run, lo, hi, window, step)


# What a normal boot never imports: first-boot code, what only a failure or a rare event loads, and roots
# (against the emulator a ca file is used; against the platform's own endpoints a normal boot imports roots
# too, and drops the DER once the context is built); an OTA task (otajob, otadl, otainst). Every other
# module counts, a new one included.
NOT_NORMAL_BOOT = ("register", "https", "reply", "roots", "neterr", "events", "fatal",
                   "otajob", "otadl", "otainst")


def figures(work, exe=None, tls=True, frozen=False):
    """The RAM figures of one run, as a dict (make bench, python -m tools.ram); see RamProbe for the options.
    Without TLS there is no first boot: its figures are None."""
    p = RamProbe(work, exe, tls, frozen).start()
    try:
        heaps = {"baseline": p.smallest(p.baseline)}
        if heaps["baseline"] is None:
            raise RuntimeError("the bare baseline does not come online with %s%s" % (
                exe or "the installed unix port", "" if not tls else " (a build without TLS needs --no-tls)"))
        heaps["normal"] = p.smallest(p.normal)
        heaps["reconnect"] = p.smallest(p.reconnect)
        heaps["first"] = p.smallest(p.first) if tls else None
        out = {"step_bytes": STEP}
        out["baseline_held"] = p.baseline(1 << 18)[1]
        out["normal_held"] = p.normal(1 << 18)[1]
        _ok, out["first_held"], out["first_boot_code_held"] = p.first(1 << 18) if tls else (None, None, None)
    finally:
        p.stop()
    for k, heap in heaps.items():
        out[k + "_bytes"] = heap
        out[k + "_kib"] = heap and round(heap / 1024, 2)
        if k != "baseline":
            out[k + "_x"] = heap and round(heap / heaps["baseline"], 3)
    out["held_over_baseline"] = out["normal_held"] - out["baseline_held"]
    sizes = {f.stem: f.stat().st_size for f in (p.lib / "aliyun_iot").glob("*.mpy")}
    out["mpy_package"] = sum(sizes.values())
    out["mpy_normal_boot"] = sum(n for m, n in sizes.items() if m not in NOT_NORMAL_BOOT)
    out["mpy_files"] = sizes
    out["runs"] = {"exe": exe, "tls": tls, "frozen": frozen}
    return out


# The package's RAM goals: heaps as ratios to the bare baseline (a 64-bit heap is bigger than an ESP32's
# for the same program, the ratio carries over), bytes in KB of 1000.
GOALS = {"normal_x": 1.5, "first_x": 1.8, "held_over_baseline": 8000, "mpy_normal_boot": 10000,
         "mpy_package": 16000}


def goals(r):
    """{figure: {"goal", "value", "met"}} for each goal with a figure in r (figures() output)."""
    return {k: {"goal": g, "value": r[k], "met": r[k] <= g} for k, g in GOALS.items() if r.get(k) is not None}


def table(r):
    runs = r.get("runs") or {}
    how = "frozen into %s" % runs["exe"] if runs.get("frozen") else "as .mpy"
    if runs.get("exe") and not runs.get("frozen"):
        how += " on %s" % runs["exe"]
    tls = runs.get("tls", True)
    flash = "  (frozen here: in flash)" if runs.get("frozen") else ""
    marks = goals(r)

    def goal(key, text):
        return "goal %s: %s" % (text, "met" if marks[key]["met"] else "MISSED") if key in marks else ""

    row = "  %-32s%6.2f KiB  %.3fx   %s"
    base = "TLS" if tls else "plain"
    first = (row % ("first boot", r["first_kib"], r["first_x"], goal("first_x", "1.8x")) if r["first_kib"]
             else "  first boot                      n/a (registration is TLS only)")
    held = "  held once online over baseline  %5d B            %s" % (r["held_over_baseline"],
                                                                   goal("held_over_baseline", "8 KB"))
    if r["first_boot_code_held"] is not None:
        held += "  first-boot code held: %s" % (", ".join(r["first_boot_code_held"]) or "none")
    return "\n".join([
        textwrap.fill("GC HEAP: what the package costs MicroPython's heap next to a bare umqtt.simple %s "
                      "connection, on the unix port with the package and shims %s: the smallest -X heapsize "
                      "from which each run comes online, in steps of %d bytes, checked up to 3 KiB above "
                      "(fragmentation makes the edge uneven). The goals are ratios to the baseline: this "
                      "port is 64-bit and its heap bigger than an ESP32's for the same program."
                      % (base, how, r.get("step_bytes", STEP)), width=108),
        "  %-32s%6.2f KiB" % ("bare umqtt.simple %s baseline" % base, r["baseline_kib"]),
        row % ("normal boot", r["normal_kib"], r["normal_x"], goal("normal_x", "1.5x")),
        first,
        (row % ("normal boot, then a reconnect", r["reconnect_kib"], r["reconnect_x"], "")).rstrip(),
        held,
        "  .mpy a normal boot imports      %5d B            %s%s" % (r["mpy_normal_boot"],
                                                                 goal("mpy_normal_boot", "10 KB"), flash),
        "  .mpy whole package              %5d B            %s%s" % (r["mpy_package"],
                                                                 goal("mpy_package", "16 KB"), flash),
    ])


def _exe(path):
    # --exe: an existing, runnable unix port; one clear line otherwise.
    import argparse
    import os

    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise argparse.ArgumentTypeError("%s is not an executable file (a MicroPython unix port)" % path)
    return os.path.abspath(path)


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.ram", allow_abbrev=False,
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--exe", type=_exe, metavar="PATH",
                    help="measure with this build of the unix port (e.g. a 32-bit one: tools/unix32.sh)")
    ap.add_argument("--no-tls", action="store_true",
                    help="plain MQTT for the measured runs, for a build without TLS (no first boot then)")
    ap.add_argument("--frozen", action="store_true",
                    help="the package and the shims are frozen into --exe: no lib/ on the path")
    a = ap.parse_args(argv)
    if a.frozen and not a.exe:
        ap.error("--frozen needs --exe, a build with the package frozen in (tools/unix32.sh --frozen)")
    if a.frozen:
        import subprocess

        r = subprocess.run([a.exe, "-c", "import aliyun_iot, umqtt.simple"], env={"MICROPYPATH": ".frozen"},
                           capture_output=True, timeout=30)
        if r.returncode:
            ap.error("%s has no frozen aliyun_iot and umqtt.simple (build it with tools/unix32.sh SRC OUT "
                     "--frozen)" % a.exe)
    with tempfile.TemporaryDirectory(prefix="ram-") as work:
        print("ram: measuring on the unix port (about 20 s)...", file=sys.stderr, flush=True)
        try:
            r = figures(work, a.exe, not a.no_tls, a.frozen)
        except RuntimeError as e:
            print("ram: %s" % e, file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("ram: interrupted", file=sys.stderr)
            return 130
        print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
