"""Power a virtual board on once and watch its console for the firmware's contract lines.

    aliyun_iot: state <name> t=<ms>                 -> a milestone (success when <name> == until)
    aliyun_iot: fatal <ErrorClass> code=<c>: <msg>  -> failure naming the error

`boot()` is the Python API behind `python -m tools.vboard boot`.
"""

import asyncio
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.vboard.board import Board, BoardConfig

STATES = ("boot", "wifi", "clock", "registering", "registered", "stored", "connecting", "online", "failed")
UNTIL_CHOICES = STATES + ("exit",)

_STATE_RE = re.compile(r"^aliyun_iot: state (\w+)(?: t=(\d+))?")
_FATAL_RE = re.compile(r"^aliyun_iot: fatal (\S+)(?: code=([^:]*))?:? ?(.*)$")


@dataclass
class StateMark:
    name: str
    ms: float  # host time since power-on
    board_t: int | None  # the firmware's own t=<ms since boot>
    boot: int  # 1 = first power-on, 2 = after the first reset, ...


@dataclass
class BootResult:
    ok: bool
    reason: str  # one line: what was reached, or what went wrong
    error: str | None = None  # short name of the failure: fatal's ErrorClass, exception type, Timeout...
    states: list[StateMark] = field(default_factory=list)
    lines: list[tuple[float, str]] = field(default_factory=list)  # (ms since power-on, console line)
    reboots: int = 0
    elapsed_ms: float = 0.0

    def state_ms(self, name):
        """Host ms of the first `aliyun_iot: state <name>` line, or None."""
        for s in self.states:
            if s.name == name:
                return s.ms
        return None

    def to_dict(self):
        return asdict(self)


class _Watch:
    def __init__(self, until, max_reboots, on_line):
        self.until = until
        self.max_reboots = max_reboots
        self.on_line = on_line
        self.t0 = time.monotonic()
        self.result = BootResult(ok=False, reason="")
        self.fatal = None
        self.boot_no = 1
        self.partial = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def ms(self):
        return (time.monotonic() - self.t0) * 1000.0

    def finish(self, ok, reason, error=None):
        if not self.done.done():
            self.done.set_result((ok, reason, error))

    def output(self, data):
        self.partial += data
        while b"\n" in self.partial:
            raw, _, rest = bytes(self.partial).partition(b"\n")
            self.partial[:] = rest
            self.line(raw.decode(errors="replace").rstrip("\r"))

    def flush(self):
        if self.partial:
            self.line(bytes(self.partial).decode(errors="replace").rstrip("\r"))
            self.partial.clear()

    def line(self, text):
        ms = self.ms()
        self.result.lines.append((ms, text))
        if self.on_line:
            self.on_line(ms, text)
        m = _STATE_RE.match(text)
        if m:
            t = int(m.group(2)) if m.group(2) else None
            self.result.states.append(StateMark(m.group(1), ms, t, self.boot_no))
            if m.group(1) == self.until:
                self.finish(True, "state %s reached" % self.until)
            return
        m = _FATAL_RE.match(text)
        if m and self.fatal is None:
            self.fatal = (m.group(1), "fatal " + text[len("aliyun_iot: fatal ") :])
            self.finish(False, self.fatal[1], self.fatal[0])

    def event(self, name, detail):
        if name == "ran":
            parts = detail.split(" ", 2)
            fname, how = parts[0], parts[1]
            summary = parts[2] if len(parts) > 2 else ""
            if how in ("exc", "intr"):
                self.finish(False, "%s crashed: %s" % (fname, summary), summary.split(":")[0] or "Exception")
            elif fname == "main.py" and how == "ok":
                if self.until == "exit":
                    self.finish(True, "main.py returned")
                else:
                    self.finish(False, "main.py returned before state %s" % self.until, "MainReturned")
            elif fname == "main.py" and how == "none":
                self.finish(False, "no main.py on the flash", "NoMain")
        elif name == "reset":
            self.result.reboots += 1
            self.boot_no += 1
            if self.result.reboots > self.max_reboots:
                self.finish(False, "reboot loop: %d resets" % self.result.reboots, "RebootLoop")
        elif name == "crash":
            self.finish(False, "board crashed: %s" % detail, "Crash")


async def boot_async(cfg: BoardConfig, until="online", timeout=60.0, max_reboots=5, on_line=None):
    if until not in UNTIL_CHOICES:
        raise ValueError("until must be one of: " + ", ".join(UNTIL_CHOICES))
    w = _Watch(until, max_reboots, on_line)
    board = Board(cfg, on_output=w.output, on_event=w.event)
    await board.start()
    try:
        ok, reason, error = await asyncio.wait_for(asyncio.shield(w.done), timeout)
    except asyncio.TimeoutError:
        last = w.result.states[-1].name if w.result.states else "none"
        reason = "timeout after %gs waiting for state %s (last state: %s)" % (timeout, until, last)
        ok, error = False, "Timeout"
    finally:
        await board.stop()  # drains what the board printed before it died
        w.flush()
    if not ok and w.fatal and error != w.fatal[0]:
        # main.py printed its fatal line, then raised: the fatal line names the error.
        reason, error = w.fatal[1], w.fatal[0]
    r = w.result
    r.ok, r.reason, r.error, r.elapsed_ms = ok, reason, error, w.ms()
    return r


def boot(
    flash,
    until="online",
    timeout=60.0,
    *,
    env=None,
    mac=None,
    wifi=None,
    heap=None,
    max_reboots=5,
    on_line=None,
) -> BootResult:
    """Power on the board on `flash` once; return when `until` is reached, on failure or timeout.

    until: a firmware state name (see STATES) or "exit" (main.py returned without an exception).
    on_line(ms, text) is called for every console line as it arrives.
    """
    cfg = BoardConfig(flash=Path(flash), mac=mac, wifi=wifi, env=dict(env or {}), heap=heap)
    return asyncio.run(boot_async(cfg, until, timeout, max_reboots, on_line))
