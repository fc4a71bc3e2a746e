"""The virtual board behind the real mpremote: files, exec/run, resets, Ctrl-C, the REPLs, cleanup."""

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

# boot.py and main.py leave a trace in the flash, so a test can see which of them ran after a reset.
_BOOT = 'open("boot.log", "a").write("b")\n'
_MAIN_COUNTING = """\
open("main.log", "a").write("m")
print("main-ran", len(open("main.log").read()))
"""
_MAIN_FOREVER = """\
print("main busy")
n = 0
while True:
    n += 1
"""


def _ok(p):
    assert p.returncode == 0, "mpremote failed (%d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
    return p.stdout


def _flash(tmp_path, main=_MAIN_COUNTING, boot=_BOOT):
    flash = tmp_path / "flash"
    (flash / "lib").mkdir(parents=True)
    (flash / "boot.py").write_text(boot)
    (flash / "main.py").write_text(main)
    return flash


def test_files_round_trip_byte_exact(vboard, tmp_path, record_property):
    board = vboard(flash=_flash(tmp_path))
    blob = bytes(range(256)) * 40  # 10 kB, every byte value
    (tmp_path / "blob.bin").write_bytes(blob)
    (tmp_path / "hello.txt").write_text("line one\nline two\n")

    t0 = time.monotonic()
    _ok(board.mpremote("cp", tmp_path / "blob.bin", ":blob.bin"))
    record_property(
        "measure", "vboard: mpremote cp of 10 kB onto the board: %.2f s" % (time.monotonic() - t0)
    )

    out = _ok(
        board.mpremote(
            "cp", tmp_path / "hello.txt", ":/lib/hello.txt",  # absolute board path: inside the flash
            "+", "cp", ":blob.bin", tmp_path / "back.bin",
            "+", "fs", "sha256sum", ":blob.bin",
            "+", "fs", "cat", ":lib/hello.txt",
            "+", "mkdir", ":d1",
            "+", "ls",
            text=False,
        )
    ).decode()  # fmt: skip
    assert (board.flash / "blob.bin").read_bytes() == blob
    assert (board.flash / "lib" / "hello.txt").read_text() == "line one\nline two\n"
    assert (tmp_path / "back.bin").read_bytes() == blob
    assert hashlib.sha256(blob).hexdigest() in out
    # a board's text stdout sends \r\n, as on a real ESP32
    assert "line one\r\nline two\r\n" in out
    assert (board.flash / "d1").is_dir()
    listing = out[out.rindex("ls :") :]
    assert "       10240 blob.bin" in listing  # sizes like littlefs gives them
    assert "d1/" in listing and "lib/" in listing
    assert ".vboard" not in listing  # the shims are "frozen": importable, not in the filesystem

    _ok(board.mpremote("rm", ":blob.bin", "+", "rmdir", ":d1"))
    assert not (board.flash / "blob.bin").exists() and not (board.flash / "d1").exists()
    p = board.mpremote("fs", "cat", ":nothing.txt")
    assert p.returncode == 1 and "No such file" in p.stderr


def test_exec_run_and_tracebacks(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path))
    script = tmp_path / "script.py"
    script.write_text("import sys\nfor i in range(3):\n    print('run', i)\nprint(sys.platform)\n")
    out = _ok(board.mpremote("exec", "x = 6 * 7", "+", "exec", "print('x is', x)", "+", "run", script))
    assert "x is 42" in out
    assert "run 0\nrun 1\nrun 2\nlinux" in out

    p = board.mpremote("exec", "def f():\n    1/0\nf()")
    assert p.returncode == 1
    assert 'File "<stdin>", line 2, in f' in p.stdout and "ZeroDivisionError" in p.stdout
    assert "repl_driver" not in p.stdout  # the board's own frames are not the user's

    p = board.mpremote("exec", "def broken(:")
    assert p.returncode == 1 and "SyntaxError" in p.stdout


def test_large_exec_through_raw_paste(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path))
    payload = "".join("%05d," % i for i in range(5000))  # 30 kB of source: many flow-control windows
    code = "s = %r\nimport hashlib\nprint(len(s), hashlib.sha256(s).digest().hex())" % payload
    out = _ok(board.mpremote("exec", code))
    assert "%d %s" % (len(payload), hashlib.sha256(payload.encode()).hexdigest()) in out


def test_reset_reruns_main_soft_reset_does_not(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path))
    board.wait_console("main-ran 1")
    _ok(board.mpremote("reset"))
    board.wait_console("main-ran 2")
    # power-on, mpremote's soft reset when it connects, the hard reset
    assert (board.flash / "boot.log").read_text() == "bbb"

    # mpremote soft-resets on connect and on soft-reset: boot.py runs, main.py does not (raw REPL)
    _ok(board.mpremote("soft-reset", "+", "exec", "print('after soft reset')"))
    assert (board.flash / "main.log").read_text() == "mm"
    assert (board.flash / "boot.log").read_text() == "bbbb"
    assert "MPY: soft reboot" in board.console()

    # machine.reset() from user code reboots too, and main.py runs again
    _ok(board.mpremote("exec", "--no-follow", "import machine; machine.reset()"))
    board.wait_console("main-ran 3")


def test_ctrl_c_interrupts_running_main(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path, main=_MAIN_FOREVER))
    board.wait_console("main busy")
    out = _ok(board.mpremote("resume", "exec", "print('got in', n > 0)"))  # resume: no soft reset
    assert "got in True" in out  # main.py's globals live on in the REPL, as on a board
    log = board.console()
    assert 'File "main.py", line 4, in <module>\r\nKeyboardInterrupt' in log
    # again right after a reset, while the board is still booting
    _ok(board.mpremote("reset"))
    assert "ok" in _ok(board.mpremote("exec", "print('ok')"))


def test_board_reboots_after_a_crash_and_still_answers(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path))
    board.wait_console("main-ran 1")
    # With Ctrl-C disabled the unix port dies on SIGINT (a board would take \x03 as a byte): the
    # next mpremote's Ctrl-C crashes the interpreter, the board reboots and mpremote gets its answer.
    code = "import micropython, time\nmicropython.kbd_intr(-1)\ntime.sleep(30)"
    _ok(board.mpremote("exec", "--no-follow", code))
    assert "still here" in _ok(board.mpremote("exec", "print('still here')"))
    assert "vboard: Ctrl-C while user code had disabled it" in board.console()
    assert (board.flash / "main.log").read_text() == "mm"  # the crash rebooted: main.py ran again


def test_board_filesystem_path_and_env(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path), mac="aa:bb:cc:00:11:22", wifi="lab:pw", env={"UMQTT_API": "1.4.0"})
    code = (
        "import os, sys, machine, network\n"
        "print(sys.path)\n"
        "print(os.getcwd(), sorted(os.listdir('/')))\n"
        "print(machine.unique_id().hex(), machine.__file__)\n"
        "print(os.getenv('VBOARD_WIFI'), os.getenv('UMQTT_API'))\n"
        "open('/made_here.txt', 'w').write('x')\n"
        "try:\n    open('/.vboard/shims/machine.py', 'w')\nexcept OSError as e:\n    print('ro', e.errno)\n"
    )
    out = _ok(board.mpremote("exec", code))
    assert "['', '/.vboard/shims', '.frozen', '/lib']" in out
    assert "/ ['boot.log', 'boot.py', 'lib', 'main.log', 'main.py']" in out
    assert "aabbcc001122 /.vboard/shims/machine.py" in out
    assert "lab:pw 1.4.0" in out
    assert "ro 30" in out
    assert (board.flash / "made_here.txt").read_text() == "x"


def _read_until(sock, marker, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_friendly_repl_over_the_socket(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path, main=_MAIN_FOREVER))
    board.wait_console("main busy")
    port = int(board.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x03")
        assert b"KeyboardInterrupt" in _read_until(s, b">>> ")
        s.sendall(b"6*7\r")
        assert b"6*7\r\n42\r\n>>> " in _read_until(s, b"42\r\n>>> ")
        s.sendall(b"for i in range(2):\r    print('i', i)\r\r")
        assert b"i 0\r\ni 1\r\n>>> " in _read_until(s, b"i 1\r\n>>> ")
        s.sendall(b"name = input('who? ')\r")
        _read_until(s, b"who? ")
        s.sendall(b"ada\r")
        _read_until(s, b">>> ")
        s.sendall(b"name\r")
        assert b"'ada'" in _read_until(s, b"'ada'\r\n>>> ")
        s.sendall(b"\x04")  # Ctrl-D: soft reset, then main.py again (friendly mode)
        assert b"MPY: soft reboot\r\n" in _read_until(s, b"main busy")


def test_binary_input_does_not_kill_the_board(vboard, tmp_path):
    # Line noise, a wrong baud rate or a tool that sends binary must not take the REPL down: a board
    # answers with an error and keeps its state (here the global x).
    board = vboard(flash=_flash(tmp_path))
    port = int(board.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\r")
        _read_until(s, b">>> ")
        s.sendall(b"x = 21\r")
        _read_until(s, b"x = 21\r\n>>> ")
        s.sendall(b"\xff\xfe\x80\xc3\x01\r")  # not UTF-8, and a stray Ctrl-A inside the line
        s.sendall(b"print('x', \xe9\xff)\r")
        s.sendall(b"print('after', x * 2)\r")
        out = _read_until(s, b"after 42\r\n>>> ")
    assert b"after 42\r\n>>> " in out
    assert out.count(b"Error") == 2, out  # each binary line got its error (a NameError here)
    assert "rebooting" not in board.console() and "soft reboot" not in board.console()


def test_pty_port_and_heap_option(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path), pty=True, heap="300k")
    assert board.pty.startswith("/dev/")
    code = "import gc\ngc.collect()\nprint('heap', gc.mem_free() + gc.mem_alloc() < 400 * 1024)"
    out = _ok(board.mpremote("exec", code, "+", "ls", port=board.pty))
    assert "heap True" in out and "main.py" in out


def _pids_in(flash):
    """Processes whose working directory is the flash (the board's interpreter)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(flash.resolve()):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
def test_stop_leaves_nothing_running(vboard, tmp_path):
    board = vboard(flash=_flash(tmp_path, main=_MAIN_FOREVER))
    board.wait_console("main busy")
    assert _pids_in(board.flash), "the board's interpreter should run in its flash directory"
    board.stop()
    assert board.proc.returncode == 0
    deadline = time.monotonic() + 5
    while _pids_in(board.flash) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_in(board.flash) == []


def test_the_filesystem_has_the_size_of_a_4mb_boards_littlefs_partition(vboard):
    # It used to report the host's disk (`234008 MB free`): deploy's space check never came into play.
    vb = vboard()
    (vb.flash / "lib").mkdir()
    (vb.flash / "lib" / "a.bin").write_bytes(b"x" * 5000)  # 2 blocks, and the folder a metadata pair
    out = vb.mpremote("exec", "import os; print(os.statvfs('/'))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(4096, 4096, 512, 506, 506, 0, 0, 0, 0, 255)"
    small = vboard(env={"VBOARD_FS_BYTES": str(64 * 1024)})
    out = small.mpremote("exec", "import os; s = os.statvfs('/'); print(s[0] * s[2], s[0] * s[3])")
    assert out.stdout.split() == [str(64 * 1024), str(56 * 1024)]  # 2 blocks: the root


def test_a_running_watchdog_resets_a_board_left_at_the_repl(vboard, tmp_path):
    # On a chip nothing feeds machine.WDT while the board waits at the REPL: it resets (the virtual
    # board's watchdog only ever fired at a late feed). Without a watchdog started, a board stays there.
    main = "import machine\nprint('app: boot')\nw = machine.WDT(timeout=1500)\nprint('app: at the repl')\n"
    boards = []
    for i, text in enumerate((main, "print('app: boot')\nprint('app: at the repl')\n")):
        flash = tmp_path / ("flash%d" % i)
        flash.mkdir()
        (flash / "main.py").write_text(text)
        vb = vboard(flash=flash)
        boards.append((vb, vb.wait_console("app: at the repl", timeout=10)))
    t0 = time.monotonic()
    (vb, at), (plain, _) = boards
    i = vb.wait_console("rst:0x8 (TG1WDT_SYS_RESET)", timeout=10, start=at)
    vb.wait_console("app: at the repl", timeout=10, start=i)  # main.py again, after the reset
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
    assert "rst:0x8" not in plain.console() and plain.console().count("app: boot") == 1
