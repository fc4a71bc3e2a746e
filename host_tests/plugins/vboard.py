"""pytest fixtures for the virtual board (tools/vboard), driven by the real mpremote.

Fixture:
  vboard   factory: vboard(flash=None, env=None, mac=None, wifi=None, heap=None, pty=False, chip=None)
           -> VBoard. Starts `python -m tools.vboard serve` on a flash directory (a fresh temp dir by
           default) on an ephemeral loopback port; every board is stopped at teardown. chip: the ROM
           bootloader esptool finds on the URL (esp32, esp32s3, esp32c3; default: serve's, esp32).

VBoard attributes: url ("socket://127.0.0.1:PORT"), pty (None, or "/dev/pts/N" with pty=True: also a
serial port for mpremote, ~0.3 s faster per mpremote run than socket://), flash (Path),
console_log (Path: all the board printed), proc (the serve process), image (Path: the SPI flash
contents esptool wrote, `<flash>.img`).
Methods: mpremote(*args, timeout=60, text=True, port=None) -> CompletedProcess (the venv's mpremote
with `connect <url>` in front, run in a temp dir; never raises on a non-zero exit; text=True
translates the board's CRLF to LF), console() -> str,
wait_console(text, timeout=10, start=0) -> index of text in the console log (AssertionError on
timeout), stop().
"""

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_READY = "vboard listening on "
_PTY = "vboard pty "


def mpremote_exe():
    here = Path(sys.executable).with_name("mpremote")
    return str(here) if here.exists() else shutil.which("mpremote")


class VBoard:
    def __init__(
        self, flash, workdir, env=None, mac=None, wifi=None, heap=None, pty=False, chip=None, start_timeout=20
    ):
        self.flash = Path(flash)
        self.image = self.flash.resolve().with_name(self.flash.name + ".img")
        self.console_log = Path(workdir) / "console.log"
        self._stderr_path = Path(workdir) / "serve.stderr"
        argv = [sys.executable, "-m", "tools.vboard", "serve", "--flash", str(self.flash), "--port", "0"]
        argv += ["--console-log", str(self.console_log)]
        for k, v in (env or {}).items():
            argv += ["--env", "%s=%s" % (k, v)]
        if mac:
            argv += ["--mac", mac]
        if wifi:
            argv += ["--wifi", wifi]
        if heap:
            argv += ["--heap", heap]
        argv += ["--pty"] if pty else ["--no-pty"]
        if chip:
            argv += ["--chip", chip]
        self._stderr = open(self._stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.url = self._ready_line(start_timeout, _READY)
        self.pty = self._ready_line(start_timeout, _PTY) if pty else None

    def _ready_line(self, timeout, prefix):
        box = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = box[0] if box else ""
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(
                "vboard serve did not start: %r %s" % (line, self._stderr_path.read_text(errors="replace"))
            )
        return line[len(prefix) :].split()[0]  # the ready line goes on with how to watch the console

    def mpremote(self, *args, timeout=60, text=True, port=None):
        """Run mpremote on this board (port: the URL by default, or self.pty)."""
        argv = [mpremote_exe(), "connect", port or self.url, *[str(a) for a in args]]
        return subprocess.run(argv, capture_output=True, text=text, timeout=timeout, cwd=self.flash.parent)

    def console(self):
        try:
            return self.console_log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, text, timeout=10, start=0):
        deadline = time.monotonic() + timeout
        while True:
            i = self.console().find(text, start)
            if i >= 0:
                return i
            if time.monotonic() > deadline:
                log = self.console()
                raise AssertionError("%r not on the console within %gs:\n%s" % (text, timeout, log))
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def vboard(tmp_path_factory):
    boards = []

    def factory(flash=None, env=None, mac=None, wifi=None, heap=None, pty=False, chip=None):
        workdir = tmp_path_factory.mktemp("vboard")
        if flash is None:
            flash = workdir / "flash"
            flash.mkdir()
        b = VBoard(flash, workdir, env=env, mac=mac, wifi=wifi, heap=heap, pty=pty, chip=chip)
        boards.append(b)
        return b

    yield factory
    for b in boards:
        b.stop()
