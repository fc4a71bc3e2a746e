"""Command line of the virtual board (docs/vboard.md, `python -m tools.vboard --help`)."""

import argparse
import asyncio
import json
import re
import signal
import sys
from pathlib import Path

from tools.vboard.board import BoardConfig, find_micropython
from tools.vboard.bootrun import UNTIL_CHOICES, boot_async
from tools.vboard.rom import CHIPS
from tools.vboard.server import SerialServer

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """No abbreviated options (a prefix must not silently pick one), one line on a usage error, and no
    value of an unknown option in it (--wifi carries a password)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        a, extra = self.parse_known_args(args, namespace)
        if extra:
            names = [x.split("=", 1)[0] for x in extra if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", x, re.S)]
            self.error("unrecognized option(s) %s (values not shown)" % " ".join(names) if names
                       else "unexpected argument(s) (not shown)")  # fmt: skip
        return a

    def error(self, message):
        print("vboard: error: %s (see --help)" % message, file=sys.stderr)
        sys.exit(2)


def _env_pairs(items):
    env = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError("--env wants K=V (value not shown)")
        env[k] = v
    return env


def _config(a):
    flash = Path(a.flash)
    if not flash.is_dir():
        raise UsageError("flash directory %s does not exist" % flash)
    if a.mac and not _MAC_RE.match(a.mac):
        raise UsageError("--mac wants aa:bb:cc:dd:ee:ff, got %r" % a.mac)
    if a.wifi and ":" not in a.wifi:
        raise UsageError("--wifi wants SSID:PASSWORD")
    find_micropython()  # fail early with a clear message
    return BoardConfig(flash=flash, mac=a.mac, wifi=a.wifi, env=_env_pairs(a.env), heap=a.heap)


def _board_args(p):
    p.add_argument("--flash", required=True, help="directory that is the board's flash (its /)")
    p.add_argument("--mac", help="base MAC aa:bb:cc:dd:ee:ff (machine.unique_id, default device name)")
    p.add_argument("--wifi", help="SSID:PASSWORD of the network in range (default: any network joins)")
    p.add_argument(
        "--env",
        action="append",
        metavar="K=V",
        help="environment for the board, e.g. VBOARD_WIFI_DELAY_MS=200, VBOARD_NTP_FAIL=1, UMQTT_API=1.4.0",
    )
    p.add_argument("--heap", help="MicroPython heap size, e.g. 256k (default: the unix port's 2 MB)")


async def _serve(a, cfg):
    chip = None if a.chip == "none" else a.chip
    try:
        srv = SerialServer(cfg, host="127.0.0.1", port=a.port, console_log=a.console_log, pty=a.pty,
                           chip=chip, image=a.image)  # fmt: skip
    except ValueError as e:
        raise UsageError(str(e)) from None
    await srv.start()
    print("vboard listening on %s  %s" % (srv.url, console_hint(srv)), flush=True)
    if srv.pty_path:
        print("vboard pty %s" % srv.pty_path, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await srv.stop()
    return 0


def console_hint(srv):
    """How to watch the board's console. mpremote 1.29's repl waits on the serial object's file descriptor
    (console.py ConsolePosix.waitchar: select on pyb_serial.fd), which pyserial's socket:// object has
    not; a pty has one."""
    if srv.pty_path:
        return "console: mpremote connect %s repl" % srv.pty_path
    return "console: python -m serial.tools.miniterm %s (mpremote repl needs --pty)" % srv.url


async def _boot(a, cfg):
    def echo(ms, text):
        if not a.quiet:
            print(("[%7.0f ms] " % ms if a.timestamps else "") + text, flush=True)

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        r = await boot_async(cfg, a.until, a.timeout, a.max_reboots, echo)
    except asyncio.CancelledError:
        print("vboard: boot interrupted", file=sys.stderr)
        return 130
    if a.json:
        Path(a.json).write_text(json.dumps(r.to_dict(), indent=1) + "\n")
    if r.ok:
        print(
            "vboard: %s after %.0f ms, %d reboot(s)" % (r.reason, r.elapsed_ms, r.reboots),
            file=sys.stderr,
        )
        return 0
    print("vboard: boot failed: %s" % r.reason, file=sys.stderr)
    return 1


def main(argv=None):
    ap = _Parser(prog="python -m tools.vboard", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    s = sub.add_parser("serve", help="expose the board as a serial port for mpremote (socket:// URL)")
    _board_args(s)
    s.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    s.add_argument("--console-log", help="append everything the board prints to this file")
    pty = s.add_mutually_exclusive_group()
    pty.add_argument("--pty", action="store_true", default=True,
                     help="also a pty, for `mpremote connect /dev/pts/N repl` (the default)")
    pty.add_argument("--no-pty", action="store_false", dest="pty", help="no pty: the socket:// URL only")
    s.add_argument(
        "--chip",
        choices=(*CHIPS, "none"),
        default="esp32",
        help="chip of the ROM bootloader that answers esptool on the socket:// URL (default %(default)s; "
        "none: esptool gets the REPL)",
    )
    s.add_argument("--image", help="file of the board's SPI flash contents (default: <flash dir>.img)")
    b = sub.add_parser("boot", help="power on once (boot.py, main.py) and wait for a firmware state")
    _board_args(b)
    b.add_argument("--until", default="online", choices=UNTIL_CHOICES, help="state to wait for")
    b.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    b.add_argument("--max-reboots", type=int, default=5, help="fail after more resets than this (default 5)")
    b.add_argument("--quiet", action="store_true", help="do not echo the console")
    b.add_argument("--timestamps", action="store_true", help="prefix console lines with ms since power-on")
    b.add_argument("--json", help="write the result (states with their ms, lines, reboots) to this file")
    a = ap.parse_args(argv)
    try:
        cfg = _config(a)
        return asyncio.run(_serve(a, cfg) if a.cmd == "serve" else _boot(a, cfg))
    except (UsageError, FileNotFoundError, OSError) as e:
        print("vboard: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
