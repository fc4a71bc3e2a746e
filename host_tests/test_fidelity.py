"""The stand-ins as strict as the ESP32 port, and what they show.

- Parity: machine.Pin's tables and messages per chip, network.WLAN's own retrying and last-failure
  status, json.dumps with non-ASCII text, umqtt.simple's len() of a str behave the same on CPython and on
  the MicroPython unix port (host_tests/device/fidelity_parity.py).
- Pins: the config check refuses an LED pin the board's chip cannot drive (the firmware's, and provision's
  per BOARD); a board given one anyway ends in a reset, never at the REPL.
- The fatal path ends in machine.reset() whatever raises inside it.
"""

import json
import subprocess
import sys

import pytest

from aliyun_iot import IotError
from aliyun_iot import config as fw_config
from host_tests.plugins.runtimes import FIRMWARE, assert_device_ok, device_script, run_script
from tools import board as B
from tools.devrun import micropython_exe


def _v_lines(res):
    return [ln for ln in res.stdout.splitlines() if ln.startswith("V ")]


def test_stand_ins_behave_the_same_on_both_runtimes(flash):
    if micropython_exe() is None:
        pytest.skip("micropython unix port not installed")
    got = {}
    for rt in ("cpython", "micropython"):
        res = run_script(rt, device_script("fidelity_parity.py"), cwd=flash, timeout=60)
        got[rt] = (sorted(assert_device_ok(res)), _v_lines(res))
    assert len(got["cpython"][0]) == 17 and len(got["cpython"][1]) == 9
    assert got["cpython"] == got["micropython"]


# ---------------------------------------------------------------- LED pins

@pytest.mark.parametrize(
    "chip,pin,ok",
    [
        ("esp32", 2, True), ("esp32", 33, True), ("esp32", 34, False), ("esp32", 39, False),
        ("esp32", 24, False), ("esp32", 6, False), ("esp32", 16, False), ("esp32", 40, False),
        ("esp32s3", 21, True), ("esp32s3", 48, True), ("esp32s3", 26, False), ("esp32s3", 35, False),
        ("esp32c3", 8, True), ("esp32c3", 21, True), ("esp32c3", 18, False), ("esp32c3", 14, False),
    ],
)  # fmt: skip
def test_config_refuses_an_led_pin_the_chip_cannot_drive(chip, pin, ok):
    raw = {"product_key": "a1PK", "product_secret": "x", "led_pin": pin}
    if ok:
        assert fw_config.validate(raw, chip)["led_pin"] == pin
        return
    with pytest.raises(IotError) as e:
        fw_config.validate(raw, chip)
    assert e.value.code == "config"
    assert e.value.msg.startswith("led_pin %d is not an output of the %s: use " % (pin, chip))


def test_the_board_knows_its_chip(runtime, flash):
    script = (
        "from aliyun_iot import config\n"
        "try:\n"
        "    config.validate({'product_key': 'a', 'product_secret': 'b', 'led_pin': 47})\n"
        "except Exception as e:\n"
        "    print('REFUSED', e.msg)\n"
        "print('CHIP', config.chip())\n"
    )
    refused = "REFUSED led_pin 47 is not an output of the "
    for chip, out in (("esp32s3", "CHIP esp32s3"), ("esp32c3", refused + "esp32c3: use 0-13, 20-21"),
                      ("", refused + "esp32: use 0-5, 9-10, 12-15, 18-23, 25-27, 32-33")):
        res = run_script(runtime, script, cwd=flash, env={"VBOARD_CHIP": chip})
        assert res.rc == 0, res.stderr
        assert out in res.stdout, res.stdout
        assert ("REFUSED" in res.stdout) == (chip != "esp32s3")


def _provision(board, pin):
    return subprocess.run(
        [sys.executable, "-m", "tools.provision", "--dry-run", "--board", board, "--product-key", "a1PK",
         "--led-pin", str(pin)],
        cwd=B.REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(B.REPO), "ALIYUN_PRODUCT_SECRET": "x1"},
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    "board,pin,ok",
    [("ESP32_GENERIC", 34, False), ("ESP32_GENERIC", 24, False), ("ESP32_GENERIC", 2, True),
     ("ESP32_GENERIC_S3", 35, False), ("ESP32_GENERIC_S3", 48, True), ("ESP32_GENERIC_C3", 19, False),
     ("ESP32_GENERIC_C3", 8, True), ("VIRTUAL", 34, False)],
)  # fmt: skip
def test_provision_refuses_an_led_pin_per_board(board, pin, ok):
    p = _provision(board, pin)
    if ok:
        assert p.returncode == 0, p.stderr
        assert "led_pin=%d" % pin in p.stdout
        return
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "led_pin %d is not an output of the " % pin in lines[0]
    assert ": use " in lines[0]


@pytest.mark.parametrize("chip,pin", [("esp32", 34), ("esp32c3", 14)])
def test_a_board_given_a_bad_led_pin_resets(runtime, flash, chip, pin):
    # config.json written past provision: the real main.py must end in machine.reset() (exit 99 on the
    # virtual board), not in a traceback at the REPL (Pin(34, Pin.OUT) raises "pin can only be input").
    (flash / "config.json").write_text(json.dumps(
        {"product_key": "a1PK", "product_secret": "x1", "led_pin": pin, "refused_cap_s": 1}))
    (flash / "main.py").write_bytes((FIRMWARE / "main.py").read_bytes())
    # the real main.py, with the wait before the reset (an hour for a config error) cut to 0.5 s
    run = "import aliyun_iot\naliyun_iot.backoff_ms = lambda *a: 500\nexec(open('main.py').read())\n"
    res = run_script(runtime, run, cwd=flash, env={"VBOARD_CHIP": chip}, timeout=60)
    assert res.rc == 99, res.stdout + res.stderr
    assert "code=config: led_pin %d is not an output of the %s" % (pin, chip) in res.stdout, res.stdout
    assert "restarting in" in res.stdout


# ---------------------------------------------------------------- the fatal path

FATAL_CASES = [
    "reset after a normal report",
    "reset when the report raises",
    "reset when the config raises MemoryError",
    "reset when the LED Pin raises",
    "reset when an LED write raises",
    "reset when the wait raises MemoryError",
    "reset when fatal cannot be loaded",
    "ctrl-c gets the REPL",
]


def test_the_fatal_path_always_ends_in_a_reset(runtime, flash):
    (flash / "config.json").write_text(json.dumps(
        {"product_key": "a1PK", "product_secret": "x1", "led_pin": 2, "refused_cap_s": 1}))
    res = run_script(runtime, device_script("fatal_faults.py"), cwd=flash, timeout=60)
    assert assert_device_ok(res) == FATAL_CASES
