"""Fixtures for running the firmware's boot flow against the emulator.

secret_guard   collects every secret a test uses and every output it sees; at teardown it fails the
               test if any secret appears in any output (subprocess output, the emulator's log, and
               what pytest captured).
board_flash(emu, flash, **config) writes config.json (pointing at the emulator, trusting its CA).
boot(runtime, flash, ...) runs one boot (host_tests/device/boot_once.py) and parses its console.
"""

import json
import re
import shutil
from typing import NamedTuple

import pytest

from host_tests.plugins.runtimes import device_script, run_script

_STATE = re.compile(r"^aliyun_iot: state (\w+) t=(\d+)$")


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


def boot(runtime, flash, env=None, timeout=90, heapsize=None, path=None, shims=None):
    """One boot of the firmware in `flash` (path: module dirs instead of firmware/); returns a Boot."""
    r = run_script(
        runtime,
        device_script("boot_once.py"),
        cwd=flash,
        env=env,
        timeout=timeout,
        heapsize=heapsize,
        path=path,
        shims=shims,
    )
    states = [m.group(1) for m in map(_STATE.match, r.stdout.splitlines()) if m]
    result = ""
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            result = line[7:]
    return Boot(r.rc, r.stdout, r.stderr, states, result)


class SecretGuard:
    def __init__(self):
        self.secrets = set()
        self.outputs = []

    def secret(self, *values):
        self.secrets.update(v for v in values if v)

    def output(self, *texts):
        self.outputs.extend(t for t in texts if t)

    def check(self):
        leaks = sorted(
            {
                "%d-char secret (sha prefix %s)" % (len(s), _fp(s))
                for s in self.secrets
                for t in self.outputs
                if s in t
            }
        )
        if leaks:
            pytest.fail("secret(s) found in output: %s" % ", ".join(leaks), pytrace=False)


def _fp(s):
    import hashlib

    return hashlib.sha256(s.encode()).hexdigest()[:4]


@pytest.fixture
def secret_guard(capfd):
    g = SecretGuard()
    yield g
    out, err = capfd.readouterr()
    g.output(out, err)
    g.check()
