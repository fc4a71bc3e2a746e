"""make bench's OTA UPDATE figures: one whole update on the MicroPython unix port against the emulator over
verified TLS, the package and the shims as mpy-cross bytecode (as tools/ram.py runs them) and the bundle a
real one (tools/ota_package.py, --mpy).

time  the console pushes a task to a board online with the OTA service started; the board's console lines
      and the emulator's record ("ota status": when it saw the inform) give the wall time of each phase:
      push -> task received -> downloaded, verified, unpacked, switched -> reset -> online at the new version
      -> the bundle kept and its version informed. Loopback (RTT 0).
RAM   the smallest -X heapsize from which the whole update succeeds (both boots, the downloading one and
      the trial one, with that heap), next to a normal boot's with and without the OTA service started; and
      the heap held once online (gc.collect, gc.mem_alloc) with the service started and without.
"""

import shutil
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from tools import ota_package, ram
from tools.devrun import board_flash, build_command, compile_firmware, run_script
from tools.emulator.process import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "devrun" / "ota_once.py"
PK, PS = "a1OtaBench1", "OtaBenchProductSecret1"
# As tools/ram measures: steps of 128 B, each edge checked 3 KiB above. A failed try ends at once (out of
# memory, or the task's failure reported), so a whole update per heap tried costs about half a second.
STEP = ram.STEP
WINDOW = ram.WINDOW
PHASES = ("task", "switched", "online", "kept", "informed")
PHASE_TEXT = {
    "task": "push -> task received",
    "switched": "download, verify, unpack, switch",
    "online": "reset -> online at the new version",
    "kept": "online -> bundle kept",
    "informed": "kept -> inform seen by the console",
}
_ENV = {"VBOARD_WIFI_DELAY_MS": "0"}


def _say(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class OtaProbe:
    def __init__(self, work):
        self.work = Path(work)
        self.lib, self.shims = compile_firmware(self.work / "mpy")
        self.emu = EmulatorProcess(
            self.work / "state",
            self.work / "emulator.log",
            ["--product", "%s=%s" % (PK, PS), "--register-linger", "1"],
        )
        self.bundle = self.work / "bundle.bin"
        self.n = 0

    def start(self):
        self.flashes = Path(tempfile.mkdtemp(prefix="ota-", dir="/tmp"))
        self.emu.start()
        self.files = ota_package.collect(mpy=True)
        self.bundle.write_bytes(ota_package.build("9.0.0", self.files))
        self.dn = "otabench-1"
        self.emu.add_device(PK, self.dn)
        flash = self.flashes / "base"
        flash.mkdir()
        board_flash(
            self.emu,
            flash,
            product_key=PK,
            product_secret=PS,
            device_name=self.dn,
            ntp=False,
            timeout=10,
            attempts=1,
            wdt_s=0,
            backoff_ms=200,
        )
        shutil.copy(REPO / "firmware" / "boot.py", flash / "boot.py")
        shutil.copytree(self.lib, flash / "lib")
        shutil.copytree(self.shims, flash / "shims")
        shutil.copy(SCRIPT, flash / "ota_once.py")
        r = self._run(flash, "plain", 1 << 20)
        if "RESULT online" not in r.stdout:
            raise RuntimeError(
                "OTA bench: the first boot failed\n%s%s" % (r.stdout[-2000:], r.stderr[-2000:])
            )
        self.base = flash
        return self

    def stop(self):
        self.emu.stop()
        shutil.rmtree(self.flashes, ignore_errors=True)

    def _run(self, flash, mode, heap, secs=10):
        return run_script(
            "micropython",
            Path("ota_once.py"),
            cwd=flash,
            heapsize=str(heap),
            path=["lib"],
            shims="shims",
            timeout=90,
            args=(mode, secs),
            env=_ENV,
        )

    def _copy(self):
        # The registered board, a fresh copy for each try (same path length every time: the unix port
        # interns the script's directory).
        self.n += 1
        flash = self.flashes / ("t%05d" % self.n)
        shutil.copytree(self.base, flash)
        return flash

    def _push(self):
        version = "9.0.%d" % self.n
        self.bundle.write_bytes(ota_package.build(version, self.files))
        self.emu.cli(
            "ota",
            "push",
            "%s/%s" % (PK, self.dn),
            str(self.bundle),
            "--version",
            version,
            "--sign-method",
            "SHA256",
        )
        return version

    def _seen(self):
        return self.emu.registry().get("ota_seen", {}).get("%s/%s" % (PK, self.dn)) or {}

    def update(self, heap):
        """(True, None) when a whole update succeeds with heap bytes: the task (pushed before the boot,
        asked for once online) downloaded and switched to, then the trial boot online and the bundle kept."""
        flash = self._copy()
        try:
            version = self._push()
            r = self._run(flash, "update", heap)
            if "RESET 99" not in r.stdout:
                return False, None
            r = self._run(flash, "trial", heap)
            ok = "TRIAL" in r.stdout and "KEPT" in r.stdout and version in self._seen().get("versions", [])
            return ok, None
        finally:
            shutil.rmtree(flash, ignore_errors=True)

    def boot(self, mode):
        def run(heap):
            r = self._run(self.base, mode, heap)
            ok = "RESULT online" in r.stdout
            held = [int(ln[5:]) for ln in r.stdout.splitlines() if ln.startswith("HELD ")]
            return ok, held[0] if ok and held else None

        return run

    def smallest(self, run, lo, hi, step=STEP, window=WINDOW):
        return ram.smallest(run, lo, hi, window, step)

    def timed(self):
        """One update at the port's default heap, timed: {phase: ms}."""
        flash = self._copy()
        lines = []  # (time.time(), text)

        def read(proc):
            for raw in proc.stdout:
                lines.append((time.time(), raw.decode("utf-8", "replace").strip()))

        def start(mode):
            import subprocess

            argv, env = build_command(
                "micropython", Path("ota_once.py"), (mode, 30), ["lib"], None, _ENV, "shims"
            )
            p = subprocess.Popen(
                argv,
                cwd=str(flash),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            t = threading.Thread(target=read, args=(p,), daemon=True)
            t.start()
            return p, t

        def at(prefix, after=0.0):
            return next((t for t, x in lines if t >= after and x.startswith(prefix)), None)

        try:
            p, t = start("update")
            end = time.monotonic() + 30
            while at("RESULT online") is None and time.monotonic() < end and p.poll() is None:
                time.sleep(0.02)
            time.sleep(0.3)  # the version reported and a pending task asked for
            n_at = len(self._seen().get("at", []))
            pushed = time.time()  # the console's `ota push` starts (a CPython process, ~0.1 s)
            version = self._push()
            p.wait(timeout=60)
            t.join(5)
            reset = at("RESET 99")
            p, t = start("trial")
            p.wait(timeout=60)
            t.join(5)
            informed = None
            for _ in range(50):
                new = self._seen().get("at", [])[n_at:]
                informed = next((w for w, what in new if what == "inform: version %s" % version), None)
                if informed:
                    break
                time.sleep(0.1)
            marks = {
                "task": at("aliyun_iot: ota: task"),
                "switched": at("aliyun_iot: ota: switched"),
                "online": at("aliyun_iot: state online", reset or 0),
                "kept": at("aliyun_iot: ota: %s online, kept" % version),
                "informed": informed,
            }
            if reset is None or None in marks.values():
                raise RuntimeError("OTA bench: the timed update did not complete: %s" % marks)
            out, prev = {}, pushed
            for k in PHASES:
                out[k] = round(max(0.0, marks[k] - prev) * 1000, 1)
                prev = max(prev, marks[k])
            out["total"] = round((prev - pushed) * 1000, 1)
            return out
        finally:
            shutil.rmtree(flash, ignore_errors=True)


def figures(work, runs=3):
    t0 = time.monotonic()
    p = OtaProbe(work).start()
    try:
        _say("OTA: %d timed updates" % runs)
        timed = [p.timed() for _ in range(runs)]
        out = {"rtt_ms": 0, "runs": timed, "size": p.bundle.stat().st_size}
        out["ms"] = {k: statistics.median(r[k] for r in timed) for k in (*PHASES, "total")}
        _say("OTA: the smallest heaps of a normal boot, with the OTA service, and a whole update")
        out["step_bytes"], out["window_bytes"] = STEP, WINDOW
        out["plain_bytes"] = p.smallest(p.boot("plain"), 16384, 131072)
        out["hook_bytes"] = p.smallest(p.boot("hook"), 16384, 131072)
        if out["hook_bytes"] is None:
            raise RuntimeError("OTA bench: a normal boot with the OTA service does not come online")
        # An update needs more than a boot with the service: search above it, first within 64 KiB.
        lo = out["hook_bytes"] - STEP
        out["update_bytes"] = p.smallest(p.update, lo, lo + 65536) or p.smallest(p.update, lo, 262144)
        out["plain_held"] = p.boot("plain")(1 << 20)[1]
        out["hook_held"] = p.boot("hook")(1 << 20)[1]
    finally:
        p.stop()
    out["hook_held_extra"] = out["hook_held"] - out["plain_held"]
    out["bench_seconds"] = round(time.monotonic() - t0, 1)  # what this section adds to make bench
    return out


def table(r, baseline_bytes=None):
    """The OTA UPDATE table; baseline_bytes: tools/ram's bare umqtt.simple TLS baseline, for the ratios."""

    def x(b):
        return (
            "  %.3fx the bare umqtt.simple TLS baseline" % (b / baseline_bytes)
            if baseline_bytes and b
            else ""
        )

    def kib(b):
        return "%6.2f KiB" % (b / 1024) if b else "    failed"

    lines = [
        textwrap.fill(
            "OTA UPDATE: one whole update on the unix port against the emulator over verified TLS, "
            "at RTT 0 (loopback): a real bundle (tools/ota_package.py --mpy, %d B), the package "
                      "and "
            "shims as .mpy; the console pushes the task to a board online with the OTA service "
            "started. Wall time per phase from the board's console lines and the emulator's record, "
            "the median of %d runs. The first phase starts with the console's `ota push` (a CPython "
            "process) and ends at the board's 'ota: task' line."
            % (r["size"], len(r["runs"])),
            width=108,
        ),
        "  %-44s %9s" % ("phase", "wall ms"),
    ]
    for k in PHASES:
        lines.append("  %-44s %9.1f" % (PHASE_TEXT[k], r["ms"][k]))
    lines.append("  %-44s %9.1f" % ("push -> inform seen (whole update)", r["ms"]["total"]))
    lines += [
        textwrap.fill(
            "The smallest -X heapsize from which each comes online (the update: both its boots, "
            "downloading and on trial, with that heap), in steps of %d B, checked %d B above. An "
            "update's boots run the OTA loader (boot.py) first, as a board does: its imports (the "
            "machine shim, in ROM on a board) hold about 8 KiB of this port's heap; the normal boots "
            "here run without it, as tools/ram's do. Held: gc.mem_alloc() after gc.collect() once "
            "online." % (r["step_bytes"], r["window_bytes"]),
            width=108,
        ),
        "  %-44s %s%s" % ("normal boot", kib(r["plain_bytes"]), x(r["plain_bytes"])),
        "  %-44s %s%s" % ("normal boot, OTA service started", kib(r["hook_bytes"]), x(r["hook_bytes"])),
        "  %-44s %s%s" % ("whole update (both boots)", kib(r["update_bytes"]), x(r["update_bytes"])),
        "  %-44s %6d B" % ("held once online", r["plain_held"]),
        "  %-44s %6d B  %+d B"
        % ("held once online, OTA service started", r["hook_held"], r["hook_held_extra"]),
    ]
    return "\n".join(lines)


def main(argv=None):
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m tools.otabench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed updates (the median is reported)")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be 1 or more")
    with tempfile.TemporaryDirectory(prefix="otabench-") as w:
        res = figures(w, runs=a.runs)
    print(json.dumps(res, indent=2))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
