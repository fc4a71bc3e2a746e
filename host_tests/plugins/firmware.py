"""Fixtures for running the firmware's boot flow against the emulator.

secret_guard   collects every secret a test uses and every output it sees; at teardown it fails the
               test if any secret appears in any output (subprocess output, the emulator's log, and
               what pytest captured).
board_flash(emu, flash, **config) writes config.json (pointing at the emulator, trusting its CA).
boot(runtime, flash, ...) runs one boot (tools/devrun/boot_once.py) and parses its console.
(board_flash, boot and Boot live in tools/devrun: the benchmark uses them too.)
mpy_firmware   (session) the package and the board shims as mpy-cross bytecode, as a board loads them:
               a Mpy(lib, shims); pass path=[lib], shims=shims to boot()/run_script() on the unix port.
"""

from typing import NamedTuple

import pytest

from tools.devrun import Boot, board_flash, boot, compile_firmware  # noqa: F401 - re-exported for tests


class Mpy(NamedTuple):
    lib: object
    shims: object


@pytest.fixture(scope="session")
def mpy_firmware(tmp_path_factory):
    return Mpy(*compile_firmware(tmp_path_factory.mktemp("mpy-firmware")))


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
