# The virtual board's "ROM": this file runs INSIDE the MicroPython unix port, not on CPython.
#
#   micropython repl_driver.py CTL_FD FLASH SHIMS MODE CAUSE
#
# One interpreter process is one boot of the board. It makes FLASH the board's "/" (a real board's
# littlefs root), puts the shims on sys.path before /lib (frozen modules shadow /lib on a board),
# runs boot.py then main.py like ports/esp32/main.c, then serves the friendly REPL and the raw REPL
# (incl. raw-paste) the way shared/runtime/pyexec.c does, because mpremote speaks exactly that.
# A soft or hard reset ends the process; the host (tools/vboard/board.py) starts the next boot.
#
# Channels (the host owns the other ends):
#   fd 0    framed input. The host sends bytes only when asked ("read"), so what this boot did not
#           consume survives a soft reset in the host's buffer. Frames: b"D" + len16 + data,
#           b"A" + seq16 (ack of "intr off <seq>").
#   fd 1    the console (stdout and stderr), forwarded byte-exact to the serial client.
#   CTL_FD  one-line messages to the host: intr on | intr off <seq> | read | ran <file> <how> [..] |
#           boot <cause> <mode> | reset soft <mode> | reset hard | note <text> (debug).
#
# Ctrl-C: the host turns a \x03 from the client into SIGINT while user code runs ("intr on") and
# passes it on as a byte otherwise, like a UART whose interrupt char is only armed during execution.
# "intr off" is acknowledged, so no SIGINT can still be in flight once this driver reads input.
import builtins
import io
import sys

import micropython
import vfs

_SHIMS = "/.vboard/shims"  # hidden from listings and read-only, like frozen modules
_EROFS = 30
_WINDOW = 2048  # raw-paste flow-control window (bytes)
_HARD_RESET_CODE = 99  # machine.reset() in tools/shims/machine.py (_RESET_EXIT)
_OUT = sys.stdout.buffer
_DRIVER_FILE = __file__

_print = builtins.print
_ctl_file = None
_mode = ["friendly"]
_seq = [0]
_G = {"__name__": "__main__"}


class _Reset(Exception):
    pass


class _HostGone(Exception):
    pass


def _ctl(msg):
    _ctl_file.write(msg.encode() + b"\n")


def _w(b):
    _OUT.write(b)


def _wc(s):
    # A board's text stdout turns "\n" into "\r\n" (mp_hal_stdout_tx_strn_cooked); the raw
    # sys.stdout.buffer does not.
    _OUT.write(s.replace("\n", "\r\n").encode())


def _cooked_print(*args, sep=" ", end="\n", file=None, flush=False):
    if file is not None:
        return _print(*args, sep=sep, end=end, file=file)
    if sep is None:
        sep = " "
    if end is None:
        end = "\n"
    _wc(sep.join([str(a) for a in args]) + end)


def _repl_print(obj):
    # What the REPL echoes for an expression statement, cooked like everything on a board's stdout.
    if obj is not None:
        builtins._ = obj
        _wc(repr(obj) + "\n")


def _exc_text(e):
    # Bytes: an exception can quote serial input that is not UTF-8 (a SyntaxError's source line).
    buf = io.BytesIO()
    sys.print_exception(e, buf)
    # The frames of this driver are not the user's: a board's traceback starts at <stdin>/main.py.
    drv = _DRIVER_FILE.encode()
    return b"\n".join([ln for ln in buf.getvalue().split(b"\n") if drv not in ln])


def _print_exc(e):
    _w(_exc_text(e).replace(b"\n", b"\r\n"))


def _summary(e):
    for ln in reversed(_exc_text(e).split(b"\n")):
        if ln.strip():
            try:
                return ln.strip().decode()
            except UnicodeError:
                break
    return type(e).__name__


class _Input:
    """Host input, fetched on demand in frames."""

    def __init__(self):
        self.f = sys.stdin.buffer
        self.buf = b""
        self.pos = 0

    def _header(self):
        h = self.f.read(3)
        if len(h) < 3:
            raise _HostGone()
        return h[0], h[1] | (h[2] << 8)

    def ack(self):
        """Wait for the next ack frame; return its sequence number."""
        while True:
            t, n = self._header()
            if t == 0x41:  # "A"
                return n
            # A data frame here would be a host bug; keep it rather than lose input.
            self.buf = self.buf[self.pos :] + self.f.read(n)
            self.pos = 0

    def fill(self):
        while self.pos >= len(self.buf):
            _ctl(_read_request())
            t, n = self._header()
            while t != 0x44:  # "D"; a stray ack from an interrupted "intr off" is skipped
                t, n = self._header()
            data = self.f.read(n)
            if len(data) < n:
                raise _HostGone()
            self.buf = data
            self.pos = 0

    def getc(self):
        self.fill()
        c = self.buf[self.pos]
        self.pos += 1
        return c


_IN = _Input()


def _read_request():
    # "read", or "read <ms>" while a machine.WDT runs: the ms it has left. Nothing feeds it while the
    # board waits at the REPL (ports/esp32: the main task blocks in mp_hal_stdin_rx_chr, and only
    # WDT.feed() resets the task watchdog), so the host resets the board if no input comes by then.
    m = sys.modules.get("machine")
    w = getattr(getattr(m, "WDT", None), "running", None) if m else None
    if w is None:
        return "read"
    import time

    return "read %d" % max(0, w._timeout - time.ticks_diff(time.ticks_ms(), w._last))


def _checkpoint():
    # A SIGINT sent before the host's ack is pending by now; a loop edge makes the VM raise it here.
    for _ in (0, 1):
        pass


def _intr_off(err):
    """Stop Ctrl-C from interrupting; return err, or the KeyboardInterrupt that arrived late."""
    while True:
        try:
            _seq[0] = _seq[0] % 60000 + 1
            _ctl("intr off %d" % _seq[0])
            while _IN.ack() != _seq[0]:
                pass
            _checkpoint()
            return err
        except KeyboardInterrupt as e:
            _ctl("note late interrupt")  # a SIGINT sent just as user code ended (tests look for it)
            if err is None:
                err = e


def _run_inner(code):
    try:
        _ctl("intr on")
        micropython.kbd_intr(3)  # user code may have disabled it (mpremote's mount does)
        exec(code, _G)
        return _intr_off(None)
    except BaseException as e:  # noqa: B036 - the REPL reports whatever user code raised
        return _intr_off(e)


def _run(code):
    """Run user code with Ctrl-C armed; return None or the exception it ended with."""
    try:
        return _run_inner(code)
    except KeyboardInterrupt as e:
        return _intr_off(e)


def _exit_kind(e):
    """'hard' for machine.reset(), 'soft' for any other SystemExit, else None."""
    if not isinstance(e, SystemExit):
        return None
    code = e.args[0] if e.args else None
    return "hard" if code == _HARD_RESET_CODE else "soft"


def _run_file(name):
    """Run boot.py or main.py as the board's firmware does; return 'ok', 'none', 'exc' or 'intr'."""
    try:
        with open(name, "rb") as f:
            src = f.read()
    except OSError:
        _ctl("ran %s none" % name)
        return "none"
    _G["__file__"] = name
    try:
        err = _run(compile(src, name, "exec"))
    except Exception as e:  # noqa: BLE001 - a SyntaxError in main.py is reported, not fatal
        err = e
    kind = _exit_kind(err)
    if kind:
        _ctl("ran %s exit" % name)
        raise _Reset(kind)
    if err is None:
        _ctl("ran %s ok" % name)
        return "ok"
    _print_exc(err)
    how = "intr" if isinstance(err, KeyboardInterrupt) else "exc"
    _ctl("ran %s %s %s" % (name, how, _summary(err)))
    return how


def _exec_framed(src, compile_mode="exec"):
    """Raw REPL execution: stdout, \\x04, exception text, \\x04 (pyexec EXEC_FLAG_PRINT_EOF)."""
    try:
        code = compile(bytes(src), "<stdin>", compile_mode)
    except Exception as e:  # noqa: BLE001 - reported to the client like the board does
        _w(b"\x04")
        _print_exc(e)
        _w(b"\x04")
        return
    err = _run(code)
    kind = _exit_kind(err)
    if kind == "hard":
        raise _Reset("hard")  # the chip resets at once: no end-of-output markers
    _w(b"\x04")
    if kind == "soft":
        _w(b"\x04")
        raise _Reset("soft")
    if err is not None:
        _print_exc(err)
    _w(b"\x04")


def _raw_paste(cmd):
    if cmd != 0x41:  # only 'A' is defined
        _w(b"R\x00")
        return
    _w(b"R\x01" + bytes([_WINDOW & 0xFF, _WINDOW >> 8]) + b"\x01")
    src = bytearray()
    remain = _WINDOW
    while True:
        _IN.fill()
        buf, pos = _IN.buf, _IN.pos
        end = len(buf)
        for marker in (b"\x03", b"\x04"):
            i = buf.find(marker, pos)
            if 0 <= i < end:
                end = i
        src.extend(buf[pos:end])
        remain -= end - pos
        while remain <= 0:
            _w(b"\x01")  # another window may be sent
            remain += _WINDOW
        _IN.pos = end
        if end < len(buf):
            c = buf[end]
            _IN.pos = end + 1
            _w(b"\x04")  # end of data acknowledged
            if c == 3:
                _w(b"\x04")
                _print_exc(KeyboardInterrupt())
                _w(b"\x04")
                return
            break
    _exec_framed(src)


def _raw_repl():
    _w(b"raw REPL; CTRL-B to exit\r\n>")
    line = bytearray()
    while True:
        c = _IN.getc()
        if c == 1:  # Ctrl-A
            if len(line) == 2 and line[0] == 5:
                _raw_paste(line[1])
                line = bytearray()
                _w(b">")
            else:
                line = bytearray()
                _w(b"raw REPL; CTRL-B to exit\r\n>")
        elif c == 2:  # Ctrl-B: friendly REPL
            _w(b"\r\n")
            _mode[0] = "friendly"
            return
        elif c == 3:
            line = bytearray()
        elif c == 4:
            _w(b"OK")
            if not line:
                _w(b"\r\n")
                raise _Reset("soft")
            _exec_framed(line)
            line = bytearray()
            _w(b">")
        else:
            line.append(c)


def _readline(prompt):
    """Friendly-REPL line input with echo; return (ctrl_char or 0, the line's bytes).

    Bytes, not str: serial input need not be UTF-8 (noise, a wrong baud rate, a binary tool), and
    decoding it here would kill the REPL. The compiler reports what is not source, as on a board.
    """
    _w(prompt)
    line = bytearray()
    last = 0
    while True:
        c = _IN.getc()
        prev, last = last, c
        if c == 13 or (c == 10 and prev != 13):
            _w(b"\r\n")
            return 0, bytes(line)
        if c == 10:
            continue
        if c == 3:
            return 3, b""
        if c in (1, 2, 4, 5):
            if not line:
                return c, b""
            continue
        if c in (8, 127):
            if line:
                line = line[:-1]
                _w(b"\x08 \x08")
            continue
        if c == 27:  # an escape sequence (arrow keys...): swallow it
            if _IN.getc() in (0x5B, 0x4F):
                while not 0x40 <= _IN.getc() <= 0x7E:
                    pass
            continue
        if c == 9 or c >= 32:
            line.append(c)
            _w(bytes([c]))


def _needs_more(src):
    """Approximation of mp_repl_continue_with_input()."""
    depth = 0
    for ch in src:  # bytes: ch is an int
        if ch in b"([{":
            depth += 1
        elif ch in b")]}":
            depth -= 1
    if depth > 0 or src.count(b'"""') % 2 or src.count(b"'''") % 2 or src.endswith(b"\\"):
        return True
    first = src.split(b"\n", 1)[0].rstrip()
    if first.endswith(b":") or first.startswith(b"@"):
        return not src.endswith(b"\n")
    return False


def _banner():
    v = sys.implementation.version
    return "MicroPython v%d.%d.%d on vboard; ESP32 virtual board (unix port)\n" % (v[0], v[1], v[2])


def _friendly_exec(text, compile_mode):
    try:
        code = compile(text, "<stdin>", compile_mode)
    except Exception as e:  # noqa: BLE001 - a typo at the prompt is printed, not fatal
        _print_exc(e)
        return
    err = _run(code)
    kind = _exit_kind(err)
    if kind:
        raise _Reset(kind)
    if err is not None:
        _print_exc(err)


def _paste_mode():
    _w(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    buf = bytearray()
    while True:
        c = _IN.getc()
        if c == 3:
            _w(b"\r\n")
            return
        if c == 4:
            _w(b"\r\n")
            _friendly_exec(bytes(buf), "exec")
            return
        buf.append(c)
        _w(b"\r\n=== " if c == 13 else bytes([c]))


def _friendly_repl():
    _wc(_banner() + 'Type "help()" for more information.\n')
    while True:
        ctrl, text = _readline(b">>> ")
        if ctrl == 1:  # Ctrl-A: raw REPL
            _w(b"\r\n")
            _mode[0] = "raw"
            return
        if ctrl == 2:
            _w(b"\r\n")
            _wc(_banner() + 'Type "help()" for more information.\n')
            continue
        if ctrl == 3:
            _w(b"\r\n")
            continue
        if ctrl == 4:  # Ctrl-D: soft reset
            _w(b"\r\n")
            raise _Reset("soft")
        if ctrl == 5:
            _paste_mode()
            continue
        if not text:
            continue
        cancelled = False
        while _needs_more(text):
            ctrl, more = _readline(b"... ")
            if ctrl == 3:
                _w(b"\r\n")
                cancelled = True
                break
            if ctrl == 4:
                break
            text += b"\n" + more
        if not cancelled:
            _friendly_exec(text, "single")


def _input(prompt=""):
    """input() for user code: reads the serial console like a board does."""
    if prompt:
        _wc(str(prompt))
    _intr_off(None)
    try:
        ctrl, text = _readline(b"")
    finally:
        _ctl("intr on")
    if ctrl == 3:
        raise KeyboardInterrupt()
    if ctrl == 4:
        raise EOFError()
    return text.decode()  # UnicodeError for non-UTF-8 input reaches user code, as on a board


_BLOCK = 4096
_FS_DEFAULT = 0x200000  # partitions-4MiB.csv (ports/esp32@v1.25.0): vfs, 0x200000 bytes


def _fs_bytes():
    import os

    try:
        v = int(os.getenv("VBOARD_FS_BYTES") or _FS_DEFAULT)
    except ValueError:
        v = _FS_DEFAULT
    return max(v, 4 * _BLOCK)


class _FlashFS:
    """The flash directory as the board's root filesystem, with the shims hidden at _SHIMS."""

    def __init__(self, flash, shims):
        self.fs = vfs.VfsPosix(flash)
        self.shims = vfs.VfsPosix(shims)

    def _route(self, path):
        if path.startswith(_SHIMS) and (len(path) == len(_SHIMS) or path[len(_SHIMS)] == "/"):
            return self.shims, path[len(_SHIMS) :] or "/"
        return self.fs, path

    def _writable(self, path):
        fs, p = self._route(path)
        if fs is self.shims:
            raise OSError(_EROFS)
        return p

    def mount(self, readonly, mkfs):
        self.fs.mount(readonly, mkfs)

    def umount(self):
        self.fs.umount()

    def ilistdir(self, path):
        # VfsPosix gives (name, type, inode); littlefs on a board adds the size, which `mpremote ls` shows.
        fs, p = self._route(path)
        prefix = p if p.endswith("/") or not p else p + "/"
        for entry in fs.ilistdir(p):
            size = 0
            if entry[1] != 0x4000:
                try:
                    size = fs.stat(prefix + entry[0])[6]
                except OSError:
                    pass
            yield (entry[0], entry[1], entry[2], size)

    def chdir(self, path):
        self.fs.chdir(path)

    def getcwd(self):
        return self.fs.getcwd()

    def mkdir(self, path):
        self.fs.mkdir(self._writable(path))

    def remove(self, path):
        self.fs.remove(self._writable(path))

    def rename(self, old, new):
        self.fs.rename(self._writable(old), self._writable(new))

    def rmdir(self, path):
        self.fs.rmdir(self._writable(path))

    def stat(self, path):
        fs, p = self._route(path)
        return fs.stat(p)

    def statvfs(self, path):
        # The board's own size, not the host disk's: a littlefs partition of _FS_BYTES in 4 KiB blocks
        # (the `vfs` partition of partitions-4MiB.csv: 2 MiB), less what its files and folders take
        # (a file whole blocks, a folder a metadata pair), as VfsLfs2.statvfs reports
        # (extmod/vfs_lfsx.c: f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, 0, 0, 0, 0, name max).
        total = _fs_bytes() // _BLOCK
        free = max(0, total - 2 - self._blocks("/"))
        return (_BLOCK, _BLOCK, total, free, free, 0, 0, 0, 0, 255)

    def _blocks(self, path):
        n = 0
        prefix = path if path.endswith("/") else path + "/"
        for entry in self.fs.ilistdir(path):
            if entry[1] == 0x4000:
                n += 2 + self._blocks(prefix + entry[0])
            else:
                try:
                    size = self.fs.stat(prefix + entry[0])[6]
                except OSError:
                    size = 0
                n += (size + _BLOCK - 1) // _BLOCK
        return n

    def open(self, path, mode):
        fs, p = self._route(path)
        if fs is self.shims and ("w" in mode or "a" in mode or "+" in mode):
            raise OSError(_EROFS)
        return fs.open(p, mode)


def _setup(ctl_fd, flash, shims):
    global _ctl_file
    _ctl_file = open("/dev/fd/" + ctl_fd, "wb")  # before "/" becomes the flash
    vfs.umount("/")
    vfs.mount(_FlashFS(flash, shims), "/")
    import os

    os.chdir("/")
    sys.path[:] = ["", _SHIMS, ".frozen", "/lib"]
    sys.argv[:] = []
    builtins.print = _cooked_print
    builtins.__repl_print__ = _repl_print
    builtins.input = _input


# The host's name for how this boot began -> machine.reset_cause() (a crash is a panic: HARD_RESET).
_CAUSES = {"power": 1, "hard": 2, "wdt": 3, "soft": 5}


def _main():
    ctl_fd, flash, shims, mode, cause = sys.argv[1:6]
    _setup(ctl_fd, flash, shims)
    _mode[0] = mode
    _ctl("boot %s %s" % (cause, mode))
    try:
        import machine  # the shim: what machine.reset_cause() reads in this boot

        machine._cause = _CAUSES.get(cause, machine.HARD_RESET)
    except ImportError:  # --chip none: no board shims
        pass
    try:
        # ports/esp32/main.c: boot.py always; main.py only for the friendly REPL and if boot.py succeeded
        if _run_file("boot.py") in ("ok", "none") and _mode[0] == "friendly":
            _run_file("main.py")
        while True:
            try:
                if _mode[0] == "raw":
                    _raw_repl()
                else:
                    _friendly_repl()
            except KeyboardInterrupt:
                _ctl("note stray interrupt")
                _w(b"\r\n")  # a stray late interrupt: back to a fresh prompt
    except _Reset as r:
        kind = r.args[0]
        if kind == "soft":
            _wc("MPY: soft reboot\n")
            _ctl("reset soft %s" % _mode[0])
        else:
            _ctl("reset hard")
            sys.exit(_HARD_RESET_CODE)
    except _HostGone:
        pass


_main()
