"""make demo, as a user runs it: a whole first boot on a virtual board against the emulator."""

import json
import subprocess
import sys

from host_tests.plugins.runtimes import REPO


def test_demo_first_boot_then_registration_skipped(tmp_path, secret_guard):
    keep = tmp_path / "kept"
    r = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--keep", str(keep)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    registry = json.loads((keep / "emulator" / "registry.json").read_text())
    for prod in registry["products"].values():
        secret_guard.secret(prod["ps"])
    for dev in registry["devices"].values():
        secret_guard.secret(dev["secret"])
    secret_guard.output(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("demo: OK")
    first, second = r.stdout.split("\nfirst boot")[1].split("\nsecond boot")
    for state in ("registering", "stored", "registered", "connected", "online"):
        assert " %s " % state in first
    assert " registering " not in second and "registration skipped" in second
    # The property post and the platform's acknowledgement, as the README says the demo shows them.
    post, ack = first.split("acknowledgement")[1].splitlines()[1:3]
    assert "device->  /sys/a1DemoProd01/" in post and "/property/post  " in post
    body = json.loads(post[post.index("{"):])
    assert body["params"] == {"online": 1} and body["method"] == "thing.event.property.post"
    assert "->device  /sys/a1DemoProd01/" in ack and "/property/post_reply" in ack and '{"code":200,' in ack
    assert "credential: present" in r.stdout
    # Nothing left running: no process still has the demo's work directory on its command line.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "aliyun-demo-" not in ps
