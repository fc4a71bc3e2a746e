"""Chinese text through the firmware's MQTT session, with each umqtt.simple generation's double.

umqtt.simple (every release) computes the Remaining Length with len() on the objects it is given and
writes them: a str is counted in characters and sent as UTF-8, so a non-ASCII str corrupts the stream.
Over TLS against the emulator, on one connection: a property post and a custom publish with
{"name": "温度传感器"}, a property set with Chinese text from the emulator, then an ASCII post.
"""

import json
import threading
import time

import pytest

from host_tests.plugins.firmware import board_flash
from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script

PK, PS = "a1NonAscii", "Ps3cretForNonAscii00"
NAME = {"name": "温度传感器"}
# the unix port runs every generation; CPython (slower to start TLS) the newest and the oldest
CASES = [("micropython", g) for g in ("1.3.4", "1.4.0", "1.6.0", "1.7.0", "1.8.0")]
CASES += [("cpython", "1.4.0"), ("cpython", "1.8.0")]


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    from tools.emulator.process import EmulatorProcess

    base = tmp_path_factory.mktemp("emu")
    e = EmulatorProcess(base / "state", base / "emulator.log", ["--product", "%s=%s" % (PK, PS)])
    e.start()
    yield e
    e.stop()


@pytest.mark.parametrize("rt,api", CASES, ids=["%s-%s" % c for c in CASES])
def test_chinese_text_both_ways_on_one_connection(rt, api, flash, emu, tmp_path, secret_guard):
    dn = "zh-%s-%s" % (api.replace(".", ""), rt[:2])
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn)
    ready = tmp_path / "ready"
    out = {}

    def run():
        out["res"] = run_script(
            rt, device_script("session_nonascii.py"), cwd=flash, env={"UMQTT_API": api},
            args=[ready], timeout=90,
        )

    t = threading.Thread(target=run)
    t.start()
    t0 = time.monotonic()
    while not ready.exists() and t.is_alive() and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    answer = None
    if ready.exists():
        res = emu.cli("set", "%s/%s" % (PK, dn), json.dumps(NAME, ensure_ascii=False), "--wait", "20",
                      check=False)
        answer = res.stdout.strip()
    t.join(120)
    res = out["res"]
    secret_guard.secret(PS, (emu.device(PK, dn) or {}).get("secret"))
    secret_guard.output(res.stdout, res.stderr)
    assert assert_device_ok(res) == [
        "chinese post acknowledged",
        "chinese publish received",
        "chinese set handled",
        "ascii post after, same connection",
    ]
    assert answer and json.loads(answer)["code"] == 200, answer
