"""A fleet powers on together: 100 boards (MicroPython unix port processes) register against an emulator that
rate-limits registrations. All register, none twice, and their retries spread out in time."""

import os
import signal
import subprocess
import time

import pytest

from host_tests.plugins.firmware import board_flash
from host_tests.plugins.runtimes import build_command, micropython_exe
from tools.devrun import BOOT_ONCE
from tools.emulator.process import EmulatorProcess

PK, PS = "a1FleetTest", "Ps3cretForTheFleet01"
BOARDS = 100
RATE = 25  # registrations per second the emulator accepts for the product; the rest get CONNACK 3

pytestmark = pytest.mark.skipif(micropython_exe() is None, reason="needs the MicroPython unix port")


def _histogram(times_ms, bucket_ms=250):
    counts = {}
    for t in times_ms:
        counts[t // bucket_ms] = counts.get(t // bucket_ms, 0) + 1
    width = max(counts.values())
    return "\n".join(
        "%6d-%6d ms %4d %s" % (b * bucket_ms, (b + 1) * bucket_ms, n, "#" * (40 * n // width))
        for b, n in sorted(counts.items())
    )


def test_fleet_of_100_registers_through_a_rate_limit(tmp_path, secret_guard, record_property):
    emu = EmulatorProcess(tmp_path / "state", tmp_path / "emulator.log", ["--product", "%s=%s" % (PK, PS)])
    emu.start()
    names = ["fleet-%03d" % i for i in range(BOARDS)]
    procs = []
    try:
        emu.seed(devices=["%s/%s" % (PK, dn) for dn in names])
        emu.fault(PK, "--rate", str(RATE))
        for i, dn in enumerate(names):
            flash = tmp_path / dn
            flash.mkdir()
            board_flash(
                emu,
                flash,
                product_key=PK,
                product_secret=PS,
                device_name=dn,
                attempts=10,
                backoff_ms=400,
                timeout=15,
                ntp=False,
            )
            argv, env = build_command("micropython", BOOT_ONCE)
            env["VBOARD_MAC"] = "24:0a:c4:00:%02x:%02x" % (i // 256, i % 256)
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=flash,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
        outputs = []
        deadline = time.monotonic() + 240
        for p in procs:
            out, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
            outputs.append(out)
        registry = emu.registry()
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        emu.stop()

    for dn in names:
        dev = registry["devices"]["%s/%s" % (PK, dn)]
        secret_guard.secret(dev["secret"])
    secret_guard.secret(PS)
    secret_guard.output(*outputs)
    failed = [(dn, out[-600:]) for dn, out in zip(names, outputs, strict=True) if "RESULT online" not in out]
    assert not failed, failed[:3]
    for dn in names:
        dev = registry["devices"]["%s/%s" % (PK, dn)]
        assert dev["activated"] is True
        assert dev["registrations"] == 1, (dn, dev["registrations"])  # no board registered twice

    first, retries = [], []
    for out in outputs:
        for line in out.splitlines():
            if line.startswith("aliyun_iot: registering "):
                attempt = int(line.split(" attempt ")[1].split("/")[0])
                t = int(line.rsplit("t=", 1)[1])
                (first if attempt == 1 else retries).append(t)
    refused = sum(out.count("(connack3)") for out in outputs)
    assert refused > 0, "the rate limit never refused anyone: the test did not test backoff"
    assert len(retries) == refused
    # Jittered backoff: the retries of boards refused together do not come back together.
    assert max(retries) - min(retries) >= 400
    record_property(
        "measure",
        "fleet: %d boards, rate limit %d/s, %d refusals (CONNACK 3), attempt times:\n%s"
        % (BOARDS, RATE, refused, _histogram(first + retries)),
    )
