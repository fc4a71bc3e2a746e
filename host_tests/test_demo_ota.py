"""make demo-ota, as a user runs it: an update over the air and a rollback on a virtual board."""

import json
import subprocess
import sys

from host_tests.plugins.runtimes import REPO


def test_demo_ota_updates_then_rolls_back(tmp_path, secret_guard):
    keep = tmp_path / "kept"
    r = subprocess.run([sys.executable, "-m", "tools.demo_ota", "--keep", str(keep)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    registry = json.loads((keep / "emulator" / "registry.json").read_text())
    secret_guard.secret(*(p["ps"] for p in registry["products"].values()))
    secret_guard.secret(*(d["secret"] for d in registry["devices"].values()))
    secret_guard.output(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("demo-ota: OK")
    assert "versions reported 0.3.0 -> 1.1.0 -> 1.1.0; last step -1 rolled back: 1.2.0" in r.stdout
    assert r.stdout.count("app C: broken build") == 2  # ota_trial_boots = 2, then the rollback
    # config.json and the credential were never touched by either update
    flash = keep / "flash"
    assert json.loads((flash / "config.json").read_text())["ota_trial_boots"] == 2
    assert (flash / "aliyun_iot.cred").exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "aliyun-demo-ota-" not in ps
