"""The production line: many boards at once, each through flash, deploy, provision, first boot, backup.

One worker per port, all in parallel. Each board goes through: flash (only with --firmware), deploy,
provision (config.json), its first boot on the line's network (reset, watch the console until
`aliyun_iot: state online`), backup of the credential it got, and one manifest row (port, MAC,
DeviceName, result, the stage that failed, seconds, backup file; never a secret). A board that fails
is recorded with its MAC, DeviceName and the reason, and never stops the others. A re-run resumes:
a board whose MAC has an "ok" row in the manifest is skipped. One live progress line per port.

A stored credential is the most valuable thing on a board (an activated device cannot register
again). A board that holds one for this product is done, whatever the manifest and the names say: it
is backed up and its row says `done: ...`; with --firmware it is backed up, flashed, deployed,
provisioned under the credential's own DeviceName, the credential restored before its first boot, and
checked online with the same DeviceSecret (sha256 compared). A board without one whose backup is in
--backups (an earlier run erased it, or was cut) is restored, never registered again. The first boot
fails at once on a `fatal` line, a traceback followed by the REPL prompt (the row carries the
exception's line) or a reset loop. Ctrl-C: each board ends the step it is in (mpremote and esptool
run detached: a flash or a credential write is never cut), its row says `interrupted` with the stage;
the same command continues it.

    python -m tools.line --board ESP32_GENERIC --ports /dev/ttyUSB* --config secrets/product.json \\
        --names names.csv --manifest line1.csv [--firmware ESP32_GENERIC-v1.29.0.bin]
    python -m tools.line --ports-file ports.txt --config secrets/product.json --manifest line1.csv
    python -m tools.line --bench 8      # boards per hour, parallel vs one after another (virtual boards)
"""

import concurrent.futures
import glob
import hashlib
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
from tools import flash as F
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


class Interrupted(Exception):
    """Ctrl-C: the board stops before this stage; its row says `interrupted`, and a re-run continues it."""

    def __init__(self, stage):
        super().__init__(stage)
        self.stage = stage


_RESETS = 3  # resets within one first boot that make it a reset loop (the firmware itself resets once
# at most, after a `fatal` line, which ends the watch sooner)
_RESET_RE = re.compile(r"rst:0x[0-9a-f]+|; rebooting$")  # a chip's reset line; the virtual board's crash
_BANNER = ("MicroPython ", 'Type "help()"')


class BootWatch:
    """The console of one first boot, line by line: online, or the first sign of a dead boot (a fatal
    line; a traceback followed by the REPL prompt; a reset loop). feed() returns "online" or None, or
    raises ToolError naming what killed the boot."""

    def __init__(self, note):
        self.note = note
        self.seen = []
        self.tail = []
        self.exc = None  # the last line of the traceback being printed, once one started
        self.resets = 0

    def line(self, text):
        self.tail = (self.tail + [text])[-3:]
        m = _STATE_RE.search(text)
        if m:
            self.seen.append(m.group(1))
            self.note("boot: %s" % m.group(1))
            if m.group(1) == "online":
                return "online"
        m = _FATAL_RE.search(text)
        if m:
            raise B.ToolError("fatal %s" % m.group(1))
        if text.startswith("Traceback"):
            self.exc = ""
            self.note("boot: traceback")
        elif self.exc is not None and not text.startswith((" ",) + _BANNER):
            self.exc = text  # "ValueError: boom": the last line of a traceback names the exception
        if _RESET_RE.search(text):
            self.resets += 1
            if self.resets >= _RESETS:
                raise B.ToolError("reset loop: %d resets before online (console: %s)"
                                  % (self.resets, " | ".join(self.tail)[:120]))  # fmt: skip
        return None

    def prompt(self):
        """The REPL prompt came: after a traceback, main.py died and nothing will bring the board online."""
        if self.exc is not None:
            raise B.ToolError("main.py stopped with %s, at the REPL prompt" % (self.exc or "a traceback"))


def first_boot(port, timeout, note, stop=None):
    """Reset the board (raw REPL: machine.reset()) and watch its console until `state online`. Returns the
    states seen; raises ToolError at the first sign of a dead boot (BootWatch) or the timeout, Interrupted
    when stop (a threading.Event) is set."""
    import serial

    try:
        s = serial.serial_for_url(port, baudrate=115200, timeout=0.1)
    except (serial.SerialException, ValueError) as e:
        raise B.ToolError("cannot open %s: %s" % (port, B.port_error(e))) from None
    watch = BootWatch(note)
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
            if stop is not None and stop.is_set():
                raise Interrupted("boot")
            buf += s.read(4096)
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                text = raw.decode(errors="replace").strip()
                if text and watch.line(text) == "online":
                    return watch.seen
            if buf.endswith(b">>> "):
                watch.prompt()
        raise B.ToolError(
            "not online within %d s (last state: %s; console: %s)"
            % (timeout, watch.seen[-1] if watch.seen else "none", " | ".join(watch.tail)[:120])
        )
    except serial.SerialException as e:
        raise B.ToolError("serial port %s: %s" % (port, B.port_error(e))) from None
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


def _identity(cred):
    """What must not change across a reflash: kind, ProductKey, DeviceName and the secret's sha256."""
    secret = cred.get("ds") if cred["kind"] == "secret" else cred.get("tok")
    return cred["kind"], cred["pk"], cred["dn"], hashlib.sha256(str(secret).encode()).hexdigest()


class Line:
    """What every board of a run shares: the config, the compiled files, the manifest, the Ctrl-C flag."""

    def __init__(self, a, settings, raw, names, files, manifest, progress):
        self.a = a
        self.settings = settings
        self.raw = raw
        self.names = names
        self.files = files
        self.manifest = manifest
        self.progress = progress
        self.local = threading.local()
        self.counts = {"ok": 0, "failed": 0, "skipped": 0, "interrupted": 0}
        self.lock = threading.Lock()
        self.stop = threading.Event()  # Ctrl-C: each board ends the step it is in, then stops

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

    def _stage(self, stage, text=None):
        """Enter a stage: Interrupted if Ctrl-C came (the board stops between two steps, never inside one)."""
        if self.stop.is_set():
            raise Interrupted(stage)
        self.local.stage = stage
        self.progress.set(self.local.index, text or stage)

    def run_port(self, i, port):
        """One board, start to end. Never raises: the outcome goes to the manifest and the counts."""
        self.local.index = i
        self.local.stage = "connect"
        note = lambda msg: self.progress.set(i, msg)  # noqa: E731
        t0 = time.monotonic()
        info = {}
        try:
            result = self._board(port, info, note)
        except Interrupted as e:
            return self._interrupted(port, info, e.stage, t0, note)
        except (B.ToolError, Failed) as e:
            stage = e.stage if isinstance(e, Failed) else self.local.stage
            if self.stop.is_set():  # a step cut by the Ctrl-C: not the board's failure
                return self._interrupted(port, info, stage, t0, note)
            reason = e.reason if isinstance(e, Failed) else str(e)
            self._row(port, info, "failed: %s: %s" % (stage, reason), stage, t0)
            self._count("failed")
            note("FAILED at %s: %s" % (stage, reason))
            return "failed"
        except Exception as e:  # noqa: BLE001 - one board's bug must not stop the line; recorded
            stage = self.local.stage
            self._row(port, info, "failed: %s: %s: %s" % (stage, type(e).__name__, e), stage, t0)
            self._count("failed")
            note("FAILED at %s: %s" % (stage, type(e).__name__))
            return "failed"
        what, text = result
        if what in ("skipped", "known"):
            if what == "skipped":  # the manifest does not know it yet: its row says why it was skipped
                self._row(port, info, text, "", t0, backup=info.get("backup"))
            self._count("skipped")
            note(text)
            return "skipped"
        self._row(port, info, text, "", t0, backup=info.get("backup"))
        self._count("ok")
        note("%s: %s online, backed up (%.0f s)" % (text, info["dn"], time.monotonic() - t0))
        return "ok"

    def _interrupted(self, port, info, stage, t0, note):
        self._row(port, info, "interrupted", stage, t0, backup=info.get("backup"))
        self._count("interrupted")
        note("interrupted before %s; a re-run continues it" % stage)
        return "interrupted"

    def _board(self, port, info, note):
        """The steps of one board; returns ("ok" | "skipped" | "known", the row's result text); "known": the
        manifest has its row already."""
        a = self.a
        board = B.Board(port, TOOL, timeout=a.timeout)
        files = None
        try:
            files = board.read_files([B.CRED_PATH])
            info["mac"] = board.mac()
        except B.ToolError as e:
            if not a.firmware:
                raise Failed("connect", str(e)) from None
            info["mac"] = None  # no MicroPython yet: the MAC is read after flashing
        if info["mac"] in self.manifest.done:
            return "known", "already done (mac %s in the manifest): skipped" % info["mac"]
        # The credential first: an activated device that loses it is locked out of registration.
        held = self._held(board, files) if files is not None else None
        if held:
            info["dn"] = held["dn"]
            self._stage("backup", "backing up its credential")
            info["backup"] = C.backup(board, a.backups)  # read back and compared byte for byte
            if not a.firmware:
                return "skipped", "done: holds the credential of %s/%s, backed up; not touched" % (
                    held["pk"], held["dn"])  # fmt: skip
        elif info["mac"]:
            self._saved(info)
        if a.firmware:
            self._stage("flash")
            self._flash(board, port, info)
            board = B.Board(port, TOOL, timeout=a.timeout)
            mac = board.mac()
            if info["mac"] and mac != info["mac"]:
                raise Failed("flash", "another board answers on %s after flashing (mac %s, was %s)"
                             % (port, mac, info["mac"]))  # fmt: skip
            if not info["mac"]:
                info["mac"] = mac
                self._saved(info)
        if not info.get("dn"):
            info["dn"] = self._name(info["mac"])
        self._stage("deploy")
        D.deploy(board, self.settings, self.files, not a.no_package, {}, log=note)
        self._stage("provision")
        # A board whose credential comes back keeps its DeviceName, whatever the names CSV says now.
        names = {info["mac"]: info["dn"]} if info.get("backup") else self.names
        P.provision_board(board, self.raw, names, False, info)
        if info.get("backup"):
            self._stage("restore", "restoring its credential from %s" % Path(info["backup"]).name)
            C.restore(board, info["backup"])
        self._stage("boot", "first boot")
        first_boot(port, a.boot_timeout, note, self.stop)
        self.local.stage = "backup"  # the board is online: its credential is saved even after a Ctrl-C
        note("backup")
        after = B.Board(port, TOOL, timeout=a.timeout)
        path = C.backup(after, a.backups)
        if info.get("backup"):
            before = C._decode(Path(info["backup"]).read_bytes(), str(info["backup"]))
            now = C._decode(path.read_bytes(), str(path))
            if _identity(before) != _identity(now):
                raise Failed("verify", "online with another credential than the one restored (%s, now %s): "
                             "keep both backups; see make status" % (B.describe_cred(before),
                                                                     B.describe_cred(now)))  # fmt: skip
            info["backup"] = path
            how = "reflashed, credential restored" if a.firmware else "credential restored from its backup"
            return "ok", "ok: %s, online with the same DeviceSecret" % how
        info["backup"] = path
        return "ok", "ok"

    def _held(self, board, files):
        """The board's stored credential if it is this product's (a done board); Failed for another
        product's or a corrupt one: the line never touches those."""
        raw, cred, problem = B.read_credential(board, files)
        if raw is None:
            return None
        if problem:
            raise Failed("connect", "its stored credential is corrupt (%s): not touched; make backup, then "
                         "see make status" % problem)  # fmt: skip
        if cred["pk"] != self.raw.get("product_key"):
            raise Failed("connect", "it holds the credential of %s/%s, another product: not touched"
                         % (cred["pk"], cred["dn"]))  # fmt: skip
        return cred

    def _saved(self, info):
        """A board without a credential that the backups folder has one of (an earlier run erased it, or
        was cut): info gets that backup and its DeviceName, so it is restored instead of registered
        again (which an activated device cannot)."""
        found = {}
        for path in sorted(Path(self.a.backups).glob("*.cred")):
            if C.mac_of_backup(path) != info["mac"]:
                continue
            try:
                raw = path.read_bytes()
                cred = C._decode(raw, str(path))
            except (OSError, B.ToolError):
                continue
            if cred["pk"] == self.raw.get("product_key"):
                found.setdefault(raw, (path, cred))
        if len(found) > 1:
            raise Failed("connect", "the backups folder holds %d different credentials of mac %s: restore "
                         "the right one with make restore, then run again"
                         % (len(found), info["mac"]))  # fmt: skip
        if found:
            ((path, cred),) = found.values()
            info["backup"], info["dn"] = path, cred["dn"]

    def _name(self, mac):
        try:
            return P.device_name_for(self.raw, mac, self.names)[0]
        except B.ToolError as e:
            raise Failed("name", str(e)) from None

    def _flash(self, board, port, info):
        argv = [sys.executable, "-m", "tools.flash", "--board", self.settings["name"], "--port", port,
                "--firmware", str(self.a.firmware), "--backups", str(self.a.backups)]  # fmt: skip
        if not info.get("mac"):
            if not self.a.new_boards:
                raise B.ToolError(
                    "the board does not answer MicroPython, so it cannot be checked for a "
                    "credential; if these boards are factory-new, run with --new-boards"
                )
            argv.append("--force")
        # Its own session: a Ctrl-C on the terminal does not cut an erase or a write in the middle.
        p = subprocess.run(argv, cwd=B.REPO, capture_output=True, text=True, timeout=600,
                           start_new_session=True)  # fmt: skip
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


def _wait_all(futures, line):
    """Wait for every board; on Ctrl-C, tell them to stop after the step they are in and wait for that."""
    try:
        concurrent.futures.wait(futures)
        return
    except KeyboardInterrupt:
        line.stop.set()
    print("%s: Ctrl-C: each board ends the step it is in and is recorded `interrupted`; the same command "
          "continues them" % TOOL, file=sys.stderr, flush=True)  # fmt: skip
    while True:
        try:
            concurrent.futures.wait(futures)
            return
        except KeyboardInterrupt:
            left = sum(not f.done() for f in futures)
            print("%s: still ending the step of %d board(s): a flash or a credential write is never cut"
                  % (TOOL, left), file=sys.stderr, flush=True)  # fmt: skip


def run(a, ports, stream=None):
    """Run the line over ports with a.workers threads; returns the counts {"ok", "failed", "skipped",
    "interrupted"}."""
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
    if a.firmware:
        # The image is checked once, before any board: a download cut short stops the line, not each board.
        if settings["chip"] is None:
            raise B.ToolError("board %s has no esptool chip: nothing to flash (drop --firmware)" % a.board)
        F.check_image(a.firmware, settings)
    P.check_output_file(a.manifest, "manifest")
    C.backup_dir(a.backups)
    manifest = P.Manifest(a.manifest, FIELDS)
    progress = Progress(ports, stream)
    build = tempfile.mkdtemp(prefix="aliyun-iot-line-")
    hook, detach = B.say_hook, B.detach_children
    try:
        files = D.plan(settings, build, a.source, a.ca, package=not a.no_package)
        line = Line(a, settings, raw, names, files, manifest, progress)
        B.say_hook = line.say
        # mpremote and esptool in their own sessions: a Ctrl-C on the terminal reaches this process
        # only, which lets every board end the step it is in (a credential write is never cut).
        B.detach_children = True
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.workers or len(ports))) as pool:
            futures = [pool.submit(line.run_port, i, p) for i, p in enumerate(ports)]
            _wait_all(futures, line)
    finally:
        B.say_hook, B.detach_children = hook, detach
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
        "line: %d ok, %d failed, %d already done, %d interrupted, of %d ports in %.1f s (%.0f boards/hour); "
        "manifest %s"
        % (
            counts["ok"],
            counts["failed"],
            counts["skipped"],
            counts["interrupted"],
            len(ports),
            dt,
            counts["ok"] * 3600.0 / dt if dt else 0,
            a.manifest,
        )  # fmt: skip
    )
    if counts["interrupted"]:
        print("line: interrupted: %d board(s) stopped between two steps; run the same command again to "
              "continue them" % counts["interrupted"], file=sys.stderr)  # fmt: skip
        return 130
    if counts["failed"]:
        raise B.ToolError("%d of %d boards failed; see %s" % (counts["failed"], len(ports), a.manifest))
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
