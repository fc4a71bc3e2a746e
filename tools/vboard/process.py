"""Start and stop a `python -m tools.vboard serve` process: the demo and the line's benchmark use it."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_URL = re.compile(r"^vboard listening on (socket://\S+)")


class VBoardProcess:
    """A virtual board on a serial URL (.url), like a USB port's, until stop()."""

    def __init__(self, flash, mac, wifi, stderr=None):
        argv = [sys.executable, "-m", "tools.vboard", "serve", "--flash", str(flash), "--port", "0",
                "--mac", mac, "--wifi", wifi]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        line = self.proc.stdout.readline()
        m = _URL.match(line)
        if not m:
            self.stop()
            raise RuntimeError("virtual board did not start: %r" % line)
        self.url = m.group(1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
