"""The emulator's command line as a careless user meets it: no abbreviated options, no typed secret in an
error, and a property set that nobody answers is said so and not left queued."""

import json
import subprocess
import sys

from tools.devrun import REPO


def emu(state, *args):
    return subprocess.run([sys.executable, "-m", "tools.emulator", "--state", str(state), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_careless_command_lines(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    assert emu(state, "--product", "a1PK=TypedSecret1", "device", "a1PK/dev-0001").returncode == 0
    r = emu(state, "--prod", "a1PK=TypedSecret1", "show")  # an abbreviation, and a typed secret
    assert r.returncode == 2 and "TypedSecret1" not in r.stderr and "<value>" in r.stderr
    r = emu(state, "set", "a1PK/dev-0001", '{"a": 1}', "--wai", "1")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr
    r = emu(state, "set", "a1PK/dev-0001", "not json")
    assert r.returncode == 2 and "JSON object" in r.stderr.splitlines()[-1]
    r = emu(state, "set", "a1PK/nobody-01", '{"a": 1}')
    assert r.returncode == 2 and r.stderr.strip() == "emulator: error: unknown device a1PK/nobody-01"
    r = emu(state, "set", "a1PK/dev-0001", '{"a": 1}', "--wait", "0.3")  # no emulator serves this state
    assert r.returncode == 3 and "no reply from a1PK/dev-0001" in r.stderr
    assert json.loads((state / "registry.json").read_text()).get("downlink") == []
