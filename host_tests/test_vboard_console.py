"""How to watch a virtual board's console: its ready line says it, and the command it gives works.

mpremote 1.29's interactive repl selects on the serial object's file descriptor (console.py,
ConsolePosix.waitchar), which pyserial's socket:// object has not; the board's pty has one, so the ready
line gives `mpremote connect /dev/pts/N repl`. The command runs here as a user runs it: the real mpremote,
its stdin a terminal."""

import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time

from host_tests.plugins.vboard import REPO, mpremote_exe


def _serve(flash, *extra):
    argv = [sys.executable, "-m", "tools.vboard", "serve", "--flash", str(flash), "--port", "0", *extra]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    return proc, proc.stdout.readline().strip() if ready else ""


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def _read_until(fd, needle, timeout):
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_ready_line_says_how_to_watch_the_console_and_that_works(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    proc, line = _serve(flash)
    try:
        m = re.fullmatch(r"vboard listening on socket://\S+  console: (mpremote connect \S+ repl)", line)
        assert m, line
        argv = shlex.split(m.group(1))
        argv[0] = mpremote_exe()
        master, slave = os.openpty()  # mpremote's repl wants a terminal on its stdin
        try:
            repl = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path)
            try:
                assert b"Connected to MicroPython" in _read_until(master, b"Ctrl-]", 15)
                os.write(master, b"\r")
                _read_until(master, b">>> ", 5)
                os.write(master, b"print(6 * 7)\r")
                assert b"42\r\n" in _read_until(master, b"42\r\n", 10)
                os.write(master, b"\x1d")  # Ctrl-]: leave mpremote
                assert repl.wait(10) == 0
            finally:
                if repl.poll() is None:
                    repl.kill()
                    repl.wait()
        finally:
            os.close(master)
            os.close(slave)
    finally:
        _stop(proc)


def test_without_a_pty_the_ready_line_names_a_console_for_the_url(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    proc, line = _serve(flash, "--no-pty")
    try:
        m = re.match(r"vboard listening on (\S+)  console: python -m serial\.tools\.miniterm (\S+) ", line)
        assert m and m.group(1) == m.group(2), line
    finally:
        _stop(proc)
