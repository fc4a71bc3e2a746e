"""The official SDK (aliyun-iot-linkkit 1.2.13, in .venv-sdk) registers and connects against the emulator."""

import json
import os
import subprocess

import pytest

from host_tests.plugins.emulator import REPO

PK, PS = "a1SdkTest01", "sdk-product-secret"


def run_sdk(sdk_python, emu, dn, mode):
    env = dict(os.environ, ALIYUN_PRODUCT_SECRET=PS)
    res = subprocess.run(
        [str(sdk_python), str(REPO / "tools" / "sdk_client.py"), "--host", emu.host, "--port", str(emu.port),
         "--https-port", str(emu.https_port), "--ca", str(emu.ca_pem), "--product-key", PK,
         "--device-name", dn, "--mode", mode, "--timeout", "15"],
        capture_output=True, text=True, timeout=90, env=env)
    return res


@pytest.mark.parametrize("mode", ["register", "regnwl", "https"])
def test_sdk_registers_connects_and_posts(sdk_python, emulator, mode):
    dn = "sdk-" + mode
    emu = emulator(products={PK: PS}, devices=["%s/sdk-register" % PK, "%s/sdk-https" % PK], regnwl=[PK])
    res = run_sdk(sdk_python, emu, dn, mode)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["ok"] is True and out["mode"] == mode
    assert 0 < out["registered_ms"] <= out["connected_ms"] <= out["acked_ms"]
    assert set(out["stages_ms"]) == {"register", "connect", "post"}
    dev = emu.device(PK, dn)
    assert dev["activated"] is True and dev["registrations"] == 1
    credential = dev["token"] if mode == "regnwl" else dev["secret"]
    assert out["credential"]["len"] == len(credential)
    for text in (res.stdout, res.stderr, emu.log()):
        assert credential not in text and PS not in text
    # Activated: a second run of the SDK cannot register the device again.
    again = run_sdk(sdk_python, emu, dn, mode)
    assert again.returncode != 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["stage"] == "register"
