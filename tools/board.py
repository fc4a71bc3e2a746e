"""Shared helpers of the board tools: board settings, mpremote, firmware modules, messages.

Every tool prints progress and its one failure line on stderr; stdout carries only results.
Nothing here ever prints a secret: callers get the credential bytes, and print fingerprints.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOARDS = REPO / "boards"
FIRMWARE = REPO / "firmware"
DEFAULT_BOARD = "ESP32_GENERIC"
CRED_PATH = "aliyun_iot.cred"
CONFIG_PATH = "config.json"
CA_PATH = "ca.der"  # where deploy --ca puts a CA, whatever the local file is called
_MPREMOTE_TIMEOUT = 60
_BOARD_KEYS = ("chip", "flash_offset", "mpy_arch", "led_pin", "baud", "package_dir", "root_files", "download")
_MPY_ARCHES = ("x86", "x64", "armv6m", "armv7m", "armv7emsp", "xtensa", "xtensawin", "rv32imc")


class ToolError(Exception):
    """A failure the tool reports as one line on stderr, then exits non-zero."""


class ArgParser(argparse.ArgumentParser):
    """argparse without abbreviations (`--product-secret` must not be taken for `--product-secret-file`)
    and without echoing what was typed: an error names the option, never its value, which may be a
    secret typed where a file name belongs."""

    def __init__(self, *args, **kw):
        kw["allow_abbrev"] = False  # subparsers are made with this class too
        super().__init__(*args, **kw)

    def parse_known_args(self, args=None, namespace=None):
        if args is None:
            args = sys.argv[1:]
        if not hasattr(self, "_typed"):
            self._typed = [str(a) for a in args]
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else [str(a) for a in args]
        self._typed = args
        a, extra = self.parse_known_args(args, namespace)
        if extra:
            names = [x.split("=", 1)[0] for x in extra if x.startswith("-")]
            self.error(
                "unrecognized option(s): %s (values not shown)%s" % (" ".join(names), self._hint(names))
                if names
                else "%d unexpected argument(s) (not shown)" % len(extra)
            )
        return a

    def _hint(self, names):
        """'; <what to give instead>' for a secret typed on the command line or an abbreviated option."""
        options = {o for action in self._actions for o in action.option_strings}
        for name in names:
            if name + "-file" in options:
                return (
                    "; a secret never goes on the command line (make, the shell history and `ps` show it): "
                    "put it in a file and give %s-file FILE" % name
                )
        for name in names:
            if name + "s" in options:
                return "; did you mean %ss?" % name
            whole = sorted(o for o in options if o.startswith(name) and name.startswith("--"))
            if len(whole) == 1:
                return "; options are never abbreviated: did you mean %s?" % whole[0]
        return ""

    def _known_words(self):
        words = set()
        for action in self._actions:
            words.update(action.option_strings)
            words.update(str(c) for c in action.choices or ())
            if action.dest:
                words.add(action.dest)
        return words

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(
            2,
            "%s: error: %s\n"
            % (self.prog, redact(message, getattr(self, "_typed", ()), self._known_words())),
        )


def redact(message, typed, keep=()):
    """message with every word the user typed that is not an option name or a choice replaced by <value>."""
    values = set()
    for t in typed:
        if t.startswith("-") and "=" in t:
            values.add(t.split("=", 1)[1])
            values.add(t)
        elif t not in keep and not t.startswith("-"):
            values.add(t)
    for v in sorted((v for v in values if v), key=len, reverse=True):
        message = re.sub(r"(?<![\w-])%s(?![\w-])" % re.escape(v), "<value>", message)
        message = message.replace(repr(v), "'<value>'")
    return message


def parser(tool, doc):
    """The parser of `python -m tools.<tool>`: the doc's first paragraph on top, the rest below."""
    parts = doc.split("\n\n")
    return ArgParser(
        prog="python -m tools." + tool,
        description=parts[0],
        epilog="\n\n".join(parts[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


detach_children = False  # mpremote in its own session (the line: a terminal's Ctrl-C does not reach it)
say_hook = None  # fn(tool, msg) taking progress lines instead of stderr (the line's live display)


def say(tool, msg):
    """A progress line on stderr."""
    if say_hook is not None:
        say_hook(tool, msg)
        return
    print("%s: %s" % (tool, msg), file=sys.stderr, flush=True)


def run_main(tool, fn, argv=None):
    """Run fn(argv); turn ToolError (and Ctrl-C) into one stderr line and exit status 1 (130)."""
    try:
        rc = fn(argv)
    except ToolError as e:
        print("%s: error: %s" % (tool, e), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("%s: interrupted" % tool, file=sys.stderr, flush=True)
        return 130
    return rc or 0


def fingerprint(secret):
    """'<n> chars, sha256 abcd...': enough to tell two secrets apart, useless to an attacker."""
    if isinstance(secret, str):
        secret = secret.encode()
    return "%d chars, sha256 %s..." % (len(secret), hashlib.sha256(secret).hexdigest()[:4])


# ---------------------------------------------------------------- firmware modules


def firmware_path():
    """Put firmware/ on sys.path: the host tools run the very code the board runs."""
    fw = str(FIRMWARE)
    if fw not in sys.path:
        sys.path.insert(0, fw)


def firmware_modules():
    """(config, store, package): the firmware's store and package (its IotError), and its config check with
    the host's on top (tools.config_schema: validate, valid_device_name, device_name_from_mac, KEYS)."""
    firmware_path()
    import aliyun_iot
    from aliyun_iot import store
    from tools import config_schema

    return config_schema, store, aliyun_iot


# ---------------------------------------------------------------- board settings


def board_names():
    return sorted(p.parent.name for p in BOARDS.glob("*/board.json"))


def load_board(name):
    """Board settings: boards/base.json overridden by boards/<name>/board.json, checked."""
    if not name or not re.fullmatch(r"[A-Z0-9_]+", name) or not (BOARDS / name / "board.json").is_file():
        raise ToolError("unknown board %r; boards: %s" % (name, ", ".join(board_names())))
    settings = {}
    for path in (BOARDS / "base.json", BOARDS / name / "board.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ToolError("cannot read %s: %s" % (path, e)) from None
        settings.update({k: v for k, v in data.items() if not k.startswith("_")})
    unknown = set(settings) - set(_BOARD_KEYS)
    if unknown:
        raise ToolError("%s: unknown board settings %s" % (name, ", ".join(sorted(unknown))))
    if settings["mpy_arch"] not in _MPY_ARCHES:
        raise ToolError("%s: mpy_arch must be one of %s" % (name, ", ".join(_MPY_ARCHES)))
    if settings["led_pin"] is not None and not (
        isinstance(settings["led_pin"], int) and 0 <= settings["led_pin"] <= 48
    ):
        raise ToolError("%s: led_pin must be null or a GPIO number 0..48" % name)
    if settings["chip"] is not None:
        offset = settings["flash_offset"]
        if not isinstance(offset, str) or not re.fullmatch(r"0x[0-9a-fA-F]+", offset):
            raise ToolError("%s: flash_offset must be a hex string like 0x1000" % name)
    settings["name"] = name
    return settings


# ---------------------------------------------------------------- mpremote


def mpremote_argv(port, *args):
    """The venv's mpremote connected to port (a serial device or a socket:// / rfc2217:// URL)."""
    return [sys.executable, "-m", "mpremote", "connect", port, *args]


def _last_line(text):
    # The last line of mpremote's output names the error; lines our own code printed on the board
    # (DATA=... may carry a credential, MAC=...) are never quoted: they say nothing about what failed.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("DATA=", "MAC="))]
    return lines[-1][:200] if lines else "no output"


def _console_text(out):
    """The board's own words in mpremote's output: mpremote prints what the board said before it gave
    up (`could not enter raw repl`) as a Python bytes literal; that literal decoded, last line, or None."""
    import ast

    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith(("b'", 'b"')):
            try:
                data = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                continue
            if isinstance(data, bytes):
                text = [t.strip() for t in data.decode(errors="replace").splitlines() if t.strip()]
                return text[-1][:120] if text else None
    return None


def mpremote_error(port, stdout, stderr):
    """One line of text (never bytes) for a failed mpremote run."""
    last = _last_line(stderr) if stderr.strip() else _last_line(stdout)
    if last.startswith("mpremote: failed to access"):
        why = diagnose_port(port)
        if why:
            return why
    if "could not enter raw repl" in last:
        said = _console_text(stdout)
        return (
            "the board on %s does not answer (mpremote could not enter the raw REPL%s): reset it and retry"
            % (
                port,
                "; its console last said: %s" % said if said else "",
            )
        )
    return "mpremote on %s failed: %s" % (port, last)


def port_error(e):
    """An exception opening a port (pyserial's, or OSError) as text naming the cause."""
    errno_ = getattr(e, "errno", None)
    text = str(e)
    if errno_ == 2 or "No such file or directory" in text:
        return "no such port"
    if errno_ == 111 or "Connection refused" in text:
        return "connection refused"
    if errno_ == 16 or "busy" in text.lower() or "Could not exclusively lock" in text:
        return "busy: another program has it open"
    return text[:120]


def diagnose_port(port):
    """Why a port cannot be opened, in words: "no such port /dev/ttyUSB9 (...)", "connection refused
    ...", "... is busy ...", or None when it opens. mpremote says "it may be in use by another program"
    whatever the cause."""
    import serial

    try:
        s = serial.serial_for_url(port, baudrate=115200, timeout=0.1, exclusive=True, do_not_open=True)
        s.open()
    except (serial.SerialException, OSError, ValueError) as e:
        why = port_error(e)
    else:
        s.close()
        return None
    if why == "no such port":
        return (
            "no such port %s (is the board plugged in? list ports: python -m serial.tools.list_ports)" % port
        )
    if why == "connection refused":
        return "connection refused by %s (is the virtual board running on that port?)" % port
    if why.startswith("busy"):
        return (
            "%s is busy: another program has it open (a serial monitor, mpremote repl, Thonny): close it"
            % port
        )
    return "cannot open %s: %s" % (port, why)


class Board:
    """A board on a serial port (or the virtual board's URL), driven by the real mpremote.

    Output is always captured: the credential file's bytes pass through a pipe, never a terminal.
    """

    def __init__(self, port, tool="board", timeout=_MPREMOTE_TIMEOUT):
        if not port:
            raise ToolError("no port given (--port /dev/ttyUSB0, COM3 or socket://127.0.0.1:PORT)")
        self.port = port
        self.tool = tool
        self.timeout = timeout
        self._mac = None

    def mpremote(self, *args, check=True):
        """Run mpremote with args; return its stdout. Raises ToolError naming the port on failure."""
        argv = mpremote_argv(self.port, *args)
        try:
            p = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, start_new_session=detach_children
            )
        except subprocess.TimeoutExpired:
            raise ToolError("mpremote on %s: no answer within %d s" % (self.port, self.timeout)) from None
        if check and p.returncode != 0:
            raise ToolError(mpremote_error(self.port, p.stdout, p.stderr))
        return p.stdout

    def exec(self, code):
        """Run code on the board; return what it printed (mpremote exec)."""
        return self.mpremote("exec", code)

    def read_files(self, paths):
        """{path: bytes, or None if absent} for board files, in one round trip that also notes the MAC."""
        code = (
            "import binascii, machine\n"
            "print('MAC=' + binascii.hexlify(machine.unique_id()).decode())\n"
            "for p in %r:\n"
            " try:\n  f = open(p, 'rb')\n except OSError:\n  print('DATA=NONE')\n"
            " else:\n  print('DATA=' + binascii.hexlify(f.read()).decode())\n  f.close()\n" % (list(paths),)
        )
        out = self.exec(code).splitlines()
        macs = [ln[4:].strip() for ln in out if ln.startswith("MAC=")]
        data = [ln[5:].strip() for ln in out if ln.startswith("DATA=")]
        if len(macs) != 1 or not re.fullmatch(r"[0-9a-f]{12}", macs[0]) or len(data) != len(paths):
            raise ToolError("garbled answer from the board on %s" % self.port)
        self._mac = macs[0]
        try:
            return {p: None if d == "NONE" else bytes.fromhex(d) for p, d in zip(paths, data, strict=True)}
        except ValueError:
            raise ToolError("garbled answer reading files from the board on %s" % self.port) from None

    def read_file(self, path):
        """The bytes of a file on the board, or None if it does not exist."""
        return self.read_files([path])[path]

    def mac(self):
        """The board's base MAC (machine.unique_id()) as 12 lowercase hex digits."""
        if self._mac is None:
            self.read_files([])
        return self._mac

    def sha256(self, paths):
        """{path: hex sha256} for board files, via `mpremote fs sha256sum` in one connection."""
        if not paths:
            return {}
        out = self.mpremote("fs", "sha256sum", *[":" + p for p in paths])
        return parse_sha256sum(out)

    def put(self, local, remote):
        """Copy a local file to the board atomically (write remote.tmp, os.rename over remote) and return
        the sha256 of remote read back from the board, all in one session."""
        tmp = remote + ".tmp"
        rename = "import os\nos.rename(%r, %r)" % (tmp, remote)
        out = self.mpremote(
            "fs", "cp", "-f", str(local), ":" + tmp, "+", "exec", rename, "+", "fs", "sha256sum", ":" + remote
        )
        return parse_sha256sum(out).get(remote)

    def reset(self):
        self.mpremote("reset")


def parse_sha256sum(out):
    """Parse `mpremote fs sha256sum :a :b` output ('sha256sum :a' then the hex digest, per file)."""
    result = {}
    current = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("sha256sum :"):
            current = line[len("sha256sum :") :]
        elif current is not None and re.fullmatch(r"[0-9a-f]{64}", line):
            result[current] = line
            current = None
    return result


def read_credential(board, files=None):
    """(raw bytes or None, decoded cred or None, error message or None) for the board's stored credential.
    files: what board.read_files() already returned, to save a round trip."""
    _, store, pkg = firmware_modules()
    raw = files[CRED_PATH] if files is not None else board.read_file(CRED_PATH)
    if raw is None:
        return None, None, None
    try:
        return raw, store.decode(raw), None
    except pkg.IotError as e:
        return raw, None, e.msg


def describe_cred(cred):
    """One line about a credential, secret replaced by its fingerprint."""
    secret = cred.get("ds") if cred["kind"] == "secret" else cred.get("tok")
    what = "DeviceSecret" if cred["kind"] == "secret" else "deviceToken"
    return "%s/%s kind=%s %s %s" % (cred["pk"], cred["dn"], cred["kind"], what, fingerprint(secret))


# ---------------------------------------------------------------- files holding secrets


def write_private(path, data):
    """Create path with mode 0600 (never readable by others, not even for a moment); fail if it exists."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path
