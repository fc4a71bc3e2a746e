"""The official Python SDK's own venv (.venv-sdk: aliyun-iot-linkkit 1.2.13, paho-mqtt 1.6.1).

Kept apart from .venv because the SDK pins paho-mqtt 1.x while the tests use paho-mqtt 2. Used by
`make bench` and by the tests that compare the firmware with the SDK.
"""

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SDK_VENV = REPO / ".venv-sdk"
SDK_REQUIREMENTS = REPO / "requirements-sdk.txt"


def ensure_sdk_venv():
    """Create .venv-sdk (aliyun-iot-linkkit 1.2.13, paho-mqtt 1.6.1) if missing; returns its python."""
    python = SDK_VENV / "bin" / "python"
    # pytest-xdist workers must not build it twice; the lock lives outside the repo.
    lock_path = Path(tempfile.gettempdir()) / ("venv-sdk-%d.lock" % os.getuid())
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _sdk_ok(python):
            return python
        subprocess.run([sys.executable, "-m", "venv", str(SDK_VENV)], check=True, capture_output=True)
        subprocess.run(
            [str(SDK_VENV / "bin" / "pip"), "install", "-q", "-r", str(SDK_REQUIREMENTS)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        if not _sdk_ok(python):
            raise RuntimeError("could not set up %s" % SDK_VENV)
    return python


def _sdk_ok(python):
    if not python.exists():
        return False
    res = subprocess.run(
        [
            str(python),
            "-c",
            "import linkkit.linkkit, paho.mqtt; import paho; "
            "from importlib.metadata import version as v; "
            "assert v('aliyun-iot-linkkit') == '1.2.13' and v('paho-mqtt') == '1.6.1'",
        ],
        capture_output=True,
    )
    return res.returncode == 0
