"""The production line: many boards at once, each through flash, deploy, provision, first boot, backup.

One worker per port, all in parallel. Each board goes through: flash (only with --firmware), deploy,
provision (config.json), its first boot on the line's network (reset, watch the console until
`aliyun_iot: state online`), backup of the credential it got, and one manifest row (port, MAC,
DeviceName, result, the stage that failed, seconds, backup file; never a secret). A board that fails
is recorded with its MAC, DeviceName and the reason, and never stops the others. A re-run resumes:
a board whose MAC has an "ok" row in the manifest is skipped. One live progress line per port.

    python -m tools.line --board ESP32_GENERIC --ports /dev/ttyUSB* --config secrets/product.json \\
        --names names.csv --manifest line1.csv [--firmware ESP32_GENERIC-v1.29.0.bin]
    python -m tools.line --ports-file ports.txt --config secrets/product.json --manifest line1.csv
    python -m tools.line --bench 8      # boards per hour, parallel vs one after another (virtual boards)
"""

import concurrent.futures
import glob
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from tools import board as B
from tools import cred as C
from tools import deploy as D
from tools import provision as P
from tools.vboard.process import VBoardProcess

TOOL = "line"
FIELDS = ("port", "mac", "device_name", "result", "stage", "seconds", "backup", "time")
DEFAULT_MANIFEST = "line-manifest.csv"
_STATE_RE = re.compile(r"aliyun_iot: state (\w+)")
_FATAL_RE = re.compile(r"aliyun_iot: fatal (.*)")


# ---------------------------------------------------------------- progress


class Progress:
    """One line per port. On a terminal the block of lines is redrawn in place; otherwise each change is
    printed as its own line, prefixed with the port."""

    def __init__(self, ports, stream=None):
        self.ports = list(ports)
        self.text = ["waiting"] * len(self.ports)
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.lock = threading.Lock()
        self.width = max(len(p) for p in self.ports) if self.ports else 0
        self.drawn = False

    def _line(self, i):
        return "[%d/%d] %-*s %s" % (i + 1, len(self.ports), self.width, self.ports[i], self.text[i])

    def set(self, i, text):
        text = text.replace("\n", " ")[:160]
        with self.lock:
            if self.text[i] == text:
                return
            self.text[i] = text
            if not self.live:
                self.stream.write("%s: %s\n" % (TOOL, self._line(i)))
            else:
                if self.drawn:
                    self.stream.write("\x1b[%dF" % len(self.ports))
                cols = shutil.get_terminal_size((120, 20)).columns - 1
                for j in range(len(self.ports)):
                    self.stream.write("\x1b[2K%s\n" % self._line(j)[:cols])
                self.drawn = True
            self.stream.flush()


# ---------------------------------------------------------------- one board


class Failed(Exception):
    def __init__(self, stage, reason):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def first_boot(port, timeout, note):
    """Reset the board (raw REPL: machine.reset()) and watch its console until `state online`. Returns the
    states seen; raises ToolError on a fatal line, a traceback or the timeout."""
    import serial

    try:
        s = serial.serial_for_url(port, baudrate=115200, timeout=0.1)
    except (serial.SerialException, ValueError) as e:
        raise B.ToolError("cannot open %s: %s" % (port, e)) from None
    seen, tail = [], []
    try:
        s.write(b"\r\x03\x03")  # stop whatever runs, like mpremote
        time.sleep(0.1)
        s.reset_input_buffer()
        s.write(b"\x01")
        _read_until(s, b"raw REPL; CTRL-B to exit\r\n>", 5, port)
        s.write(b"import machine\nmachine.reset()\x04")
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            buf += s.read(4096)
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                text = raw.decode(errors="replace").strip()
                if not text:
                    continue
                tail = (tail + [text])[-3:]
                m = _STATE_RE.search(text)
                if m:
                    seen.append(m.group(1))
                    note("boot: %s" % m.group(1))
                    if m.group(1) == "online":
                        return seen
                m = _FATAL_RE.search(text)
                if m:
                    raise B.ToolError("fatal %s" % m.group(1))
                if text.startswith("Traceback"):
                    note("boot: traceback")
        raise B.ToolError(
            "not online within %d s (last state: %s; console: %s)"
            % (timeout, seen[-1] if seen else "none", " | ".join(tail)[:120])
        )
    except serial.SerialException as e:
        raise B.ToolError("serial port %s: %s" % (port, e)) from None
    finally:
        s.close()


def _read_until(s, marker, timeout, port):
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        data += s.read(256)
        if data.endswith(marker):
            return data
    raise B.ToolError("no raw REPL on %s (is MicroPython running?)" % port)


class Line:
    """What every board of a run shares: the config, the compiled files, the manifest."""

    def __init__(self, a, settings, raw, names, files, manifest, progress):
        self.a = a
        self.settings = settings
        self.raw = raw
        self.names = names
        self.files = files
        self.manifest = manifest
        self.progress = progress
        self.local = threading.local()
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.lock = threading.Lock()

    def say(self, tool, msg):
        """B.say() while the line runs: into the calling worker's progress line."""
        i = getattr(self.local, "index", None)
        if i is None:
            print("%s: %s" % (tool, msg), file=sys.stderr, flush=True)
        else:
            self.progress.set(i, "%s: %s" % (tool, msg))

    def _count(self, what):
        with self.lock:
            self.counts[what] += 1

    def run_port(self, i, port):
        """One board, start to end. Never raises: the outcome goes to the manifest and the counts."""
        self.local.index = i
        note = lambda msg: self.progress.set(i, msg)  # noqa: E731
        t0 = time.monotonic()
        info = {}
        stage = "connect"
        try:
            board = B.Board(port, TOOL, timeout=self.a.timeout)
            try:
                info["mac"] = board.mac()
            except B.ToolError as e:
                if not self.a.firmware:
                    raise Failed(stage, str(e)) from None
                info["mac"] = None  # no MicroPython yet: the MAC is read after flashing
            if info["mac"] in self.manifest.done:
                self._count("skipped")
                note("already done (mac %s in the manifest): skipped" % info["mac"])
                return "skipped"
            if info["mac"]:
                info["dn"] = self._name(info["mac"])
            if self.a.firmware:
                stage = "flash"
                note("flash")
                self._flash(board, port, info)
                board = B.Board(port, TOOL, timeout=self.a.timeout)
                info["mac"] = board.mac()
                info["dn"] = self._name(info["mac"])
            stage = "deploy"
            note("deploy")
            D.deploy(board, self.settings, self.files, not self.a.no_package, {}, log=note)
            stage = "provision"
            note("provision")
            P.provision_board(board, self.raw, self.names, False, info)
            stage = "boot"
            note("first boot")
            first_boot(port, self.a.boot_timeout, note)
            stage = "backup"
            note("backup")
            path = C.backup(B.Board(port, TOOL, timeout=self.a.timeout), self.a.backups)
        except (B.ToolError, Failed) as e:
            reason = e.reason if isinstance(e, Failed) else str(e)
            stage = e.stage if isinstance(e, Failed) else stage
            self._row(port, info, "failed: %s: %s" % (stage, reason), stage, t0)
            self._count("failed")
            note("FAILED at %s: %s" % (stage, reason))
            return "failed"
        except Exception as e:  # noqa: BLE001 - one board's bug must not stop the line; recorded
            self._row(port, info, "failed: %s: %s: %s" % (stage, type(e).__name__, e), stage, t0)
            self._count("failed")
            note("FAILED at %s: %s" % (stage, type(e).__name__))
            return "failed"
        self._row(port, info, "ok", "", t0, backup=path)
        self._count("ok")
        note("ok: %s online, backed up (%.0f s)" % (info["dn"], time.monotonic() - t0))
        return "ok"

    def _name(self, mac):
        try:
            return P.device_name_for(self.raw, mac, self.names)[0]
        except B.ToolError as e:
            raise Failed("name", str(e)) from None

    def _flash(self, board, port, info):
        if info.get("mac"):  # a credential from an earlier attempt is backed up before the erase
            try:
                C.backup(board, self.a.backups)
            except B.ToolError as e:
                if "nothing to back up" not in str(e):
                    raise
        argv = [sys.executable, "-m", "tools.flash", "--board", self.settings["name"], "--port", port,
                "--firmware", str(self.a.firmware), "--backups", str(self.a.backups)]  # fmt: skip
        if not info.get("mac"):
            if not self.a.new_boards:
                raise B.ToolError("the board does not answer MicroPython, so it cannot be checked for a "
                                  "credential; if these boards are factory-new, run with --new-boards")
            argv.append("--force")
        p = subprocess.run(argv, cwd=B.REPO, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            raise B.ToolError(lines[-1] if lines else "tools.flash exited %d" % p.returncode)

    def _row(self, port, info, result, stage, t0, backup=None):
        self.manifest.add(
            port,
            info.get("mac"),
            info.get("dn"),
            result,
            stage=stage,
            seconds="%.1f" % (time.monotonic() - t0),
            backup=str(backup or ""),
        )


# ---------------------------------------------------------------- the run


def expand_ports(patterns, ports_file=None):
    """Ports from arguments (globs expanded, e.g. /dev/ttyUSB*) and a file (one a line, # comments)."""
    items = list(patterns or ())
    if ports_file:
        try:
            text = Path(ports_file).read_text(encoding="utf-8")
        except OSError as e:
            raise B.ToolError("cannot read ports file %s: %s" % (ports_file, e.strerror)) from None
        except ValueError:
            raise B.ToolError("ports file %s is not UTF-8 text" % ports_file) from None
        items += [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    ports = []
    for item in filter(None, items):
        if "://" not in item and glob.has_magic(item):
            found = sorted(glob.glob(item))
            if not found:
                raise B.ToolError("no port matches %s" % item)
            ports += found
        else:
            ports.append(item)
    dup = {p for p in ports if ports.count(p) > 1}
    if dup:
        raise B.ToolError("port %s is listed twice" % sorted(dup)[0])
    if not ports:
        raise B.ToolError("no ports: give --ports PORT... or --ports-file FILE")
    return ports


def run(a, ports, stream=None):
    """Run the line over ports with a.workers threads; returns the counts {"ok", "failed", "skipped"}."""
    settings = B.load_board(a.board)
    raw = P.build_raw(
        SimpleNamespace(
            config=a.config,
            product_secret_file=a.product_secret_file,
            wifi_password_file=a.wifi_password_file,
            no_ntp=False,
            **{flag: None for flag in P._FLAG_KEYS},
        ),
        settings,
    )
    if a.ca:
        raw["ca"] = B.CA_PATH
    P.validate(raw)
    if raw.get("device_name"):
        raise B.ToolError(
            "a line cannot give every board one device_name: use --names CSV or MAC-derived names"
        )
    names = P.read_names(a.names) if a.names else None
    if a.firmware and not Path(a.firmware).is_file():
        raise B.ToolError("firmware image %s not found" % a.firmware)
    P.check_output_file(a.manifest, "manifest")
    C.backup_dir(a.backups)
    manifest = P.Manifest(a.manifest, FIELDS)
    progress = Progress(ports, stream)
    build = tempfile.mkdtemp(prefix="aliyun-iot-line-")
    hook = B.say_hook
    try:
        files = D.plan(settings, build, a.source, a.ca, package=not a.no_package)
        line = Line(a, settings, raw, names, files, manifest, progress)
        B.say_hook = line.say
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.workers or len(ports))) as pool:
            list(pool.map(line.run_port, range(len(ports)), ports))
    finally:
        B.say_hook = hook
        manifest.close()
        shutil.rmtree(build, ignore_errors=True)
    return line.counts


# ---------------------------------------------------------------- throughput on virtual boards


def bench(n=8, work=None):
    """Boards per hour through the whole line (deploy, provision, first boot against the local emulator,
    backup): n fresh virtual boards in parallel, then n fresh ones one after another. Returns
    {"parallel": (seconds, boards/hour), "sequential": (...)}."""
    from tools.emulator.process import EmulatorProcess

    config, _, _ = B.firmware_modules()
    work = Path(work or tempfile.mkdtemp(prefix="aliyun-line-bench-"))
    pk, ps = "a1LineBench", secrets.token_hex(12)
    wifi = ("line-net", secrets.token_hex(8))
    macs = {
        mode: ["24:0a:c4:%02x:00:%02x" % (k, i) for i in range(1, n + 1)]
        for k, mode in ((0xB1, "parallel"), (0xB2, "sequential"))
    }
    dns = [config.device_name_from_mac(bytes.fromhex(m.replace(":", ""))) for ms in macs.values() for m in ms]
    registry = ["--product", "%s=%s" % (pk, ps)]
    for dn in dns:
        registry += ["--device", "%s/%s" % (pk, dn)]
    emu = EmulatorProcess(work / "emulator", work / "emulator.log", registry)
    boards = []
    result = {}
    try:
        emu.start()
        product = {"product_key": pk, "product_secret": ps, "host": "localhost", "port": emu.port,
                   "wifi_ssid": wifi[0], "wifi_password": wifi[1]}  # fmt: skip
        cfg = B.write_private(work / "product.json", json.dumps(product).encode())
        for mode, workers in (("parallel", n), ("sequential", 1)):
            ports = []
            for m in macs[mode]:
                flash = work / mode / m.replace(":", "")
                flash.mkdir(parents=True)
                b = VBoardProcess(flash, m, "%s:%s" % wifi, stderr=subprocess.DEVNULL)
                boards.append(b)
                ports.append(b.url)
            a = _args(config=str(cfg), ca=str(emu.ca_der), manifest=str(work / ("%s.csv" % mode)),
                      backups=str(work / "backups"), workers=workers)  # fmt: skip
            print(
                "line-bench: %d virtual boards, %s (%d at a time) ..." % (n, mode, workers), file=sys.stderr
            )
            t0 = time.monotonic()
            counts = run(a, ports, stream=_Quiet())
            dt = time.monotonic() - t0
            if counts["ok"] != n:
                raise B.ToolError("%s run: %d of %d boards ok; see %s" % (mode, counts["ok"], n, a.manifest))
            result[mode] = (dt, n * 3600.0 / dt)
    finally:
        for b in boards:
            b.stop()
        emu.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


class _Quiet:
    def write(self, s):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False


def _args(**kw):
    a = parse_args(["--ports", "x", "--config", "x"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


# ---------------------------------------------------------------- command line


def parse_args(argv):
    ap = B.parser("line", __doc__)
    ap.add_argument("--board", default=B.DEFAULT_BOARD, help="board name under boards/ (default %(default)s)")
    ap.add_argument("--ports", nargs="+", help="ports or globs (/dev/ttyUSB*), one board each")
    ap.add_argument("--ports-file", help="file listing the ports, one a line")
    ap.add_argument(
        "--config", help="the product's config JSON (product_key, product_secret, wifi_ssid, ...)"
    )
    ap.add_argument("--product-secret-file", help="file holding the ProductSecret (wins over --config)")
    ap.add_argument(
        "--wifi-password-file", help="file holding the line's Wi-Fi password (wins over --config)"
    )
    ap.add_argument("--names", help="CSV with columns mac,device_name (else names derive from the MAC)")
    ap.add_argument("--firmware", help="MicroPython image to flash first (default: no flashing)")
    ap.add_argument(
        "--new-boards",
        action="store_true",
        help="with --firmware: a board that does not answer MicroPython is factory-new (nothing to back up): "
        "flash it with tools.flash --force. Without it such a board fails, its flash left untouched",
    )
    ap.add_argument("--ca", help="a CA file for the boards (put at %s; config key ca set to it)" % B.CA_PATH)
    ap.add_argument("--source", action="store_true", help="deploy the package as .py")
    ap.add_argument("--no-package", action="store_true", help="the package is frozen in the firmware")
    ap.add_argument("--manifest", default=DEFAULT_MANIFEST, help="CSV, one row per board (%(default)s)")
    ap.add_argument("--backups", default=str(C.DEFAULT_DIR), help="credential backups folder (%(default)s)")
    ap.add_argument("--workers", type=int, default=0, help="boards at a time (default: all ports)")
    ap.add_argument("--boot-timeout", type=int, default=90, help="seconds for a first boot (%(default)s)")
    ap.add_argument("--timeout", type=int, default=60, help="seconds for one mpremote step (%(default)s)")
    ap.add_argument(
        "--bench", type=int, metavar="N", help="measure boards/hour with N virtual boards; no ports"
    )
    a = ap.parse_args(argv)
    if a.bench is None and not (a.ports or a.ports_file):
        ap.error("give --ports PORT... or --ports-file FILE (or --bench N)")
    if a.bench is None and not a.config and not a.product_secret_file:
        ap.error("give --config FILE")
    if a.workers < 0 or (a.bench is not None and a.bench < 1):
        ap.error("--workers and --bench want a positive number")
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.bench is not None:
        r = bench(a.bench)
        (tp, bp), (ts, bs) = r["parallel"], r["sequential"]
        print("line-bench: %d virtual boards through deploy, provision, first boot, backup" % a.bench)
        print("  parallel   (%d at a time): %6.1f s  %6.0f boards/hour" % (a.bench, tp, bp))
        print("  sequential (1 at a time): %6.1f s  %6.0f boards/hour  (parallel x%.1f)" % (ts, bs, bp / bs))
        return 0
    ports = expand_ports(a.ports, a.ports_file)
    t0 = time.monotonic()
    counts = run(a, ports)
    dt = time.monotonic() - t0
    print(
        "line: %d ok, %d failed, %d already done, of %d ports in %.1f s (%.0f boards/hour); manifest %s"
        % (
            counts["ok"],
            counts["failed"],
            counts["skipped"],
            len(ports),
            dt,
            counts["ok"] * 3600.0 / dt if dt else 0,
            a.manifest,
        )  # fmt: skip
    )
    if counts["failed"]:
        raise B.ToolError("%d of %d boards failed; see %s" % (counts["failed"], len(ports), a.manifest))
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
