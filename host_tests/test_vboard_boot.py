"""`python -m tools.vboard boot` and tools.vboard.boot(): power on once, watch the contract lines."""

import json
import subprocess
import sys
from pathlib import Path

from tools.vboard import boot

REPO = Path(__file__).resolve().parents[1]

# A stand-in firmware that prints the console contract: registers, resets, comes online.
_MAIN_FIRSTBOOT = """\
import time, machine
t0 = time.ticks_ms()
def state(name):
    print("aliyun_iot: state %s t=%d" % (name, time.ticks_ms() - t0))
print("main start")
state("boot")
try:
    open("aliyun_iot.cred").close()
    registered = True
except OSError:
    registered = False
if not registered:
    state("registering")
    open("aliyun_iot.cred", "w").write("x")
    state("stored")
    state("registered")
    machine.reset()
state("connecting")
state("online")
"""


def _flash(tmp_path, main, boot_py=None):
    flash = tmp_path / "flash"
    (flash / "lib").mkdir(parents=True)
    (flash / "main.py").write_text(main)
    if boot_py is not None:
        (flash / "boot.py").write_text(boot_py)
    return flash


def _cli(*args, timeout=60):
    argv = [sys.executable, "-m", "tools.vboard", *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_boot_api_follows_a_reset_to_online(tmp_path, record_property):
    r = boot(_flash(tmp_path, _MAIN_FIRSTBOOT), until="online", timeout=30)
    assert r.ok, r.reason
    assert r.reboots == 1
    names = [(s.name, s.boot) for s in r.states]
    assert names == [
        ("boot", 1), ("registering", 1), ("stored", 1), ("registered", 1),
        ("boot", 2), ("connecting", 2), ("online", 2),
    ]  # fmt: skip
    assert r.states[-1].board_t is not None
    assert r.state_ms("registered") <= r.state_ms("online") <= r.elapsed_ms
    first_main = next(ms for ms, text in r.lines if text == "main start")
    record_property("measure", "vboard: power-on to first main.py line: %.0f ms" % first_main)

    # second power-on: the credential is on the flash, registration is skipped
    r2 = boot(tmp_path / "flash", until="online", timeout=30)
    assert r2.ok and r2.reboots == 0
    assert "registering" not in [s.name for s in r2.states]


def test_boot_cli_stops_at_registered_and_writes_json(tmp_path):
    flash = _flash(tmp_path, _MAIN_FIRSTBOOT, boot_py="print('boot.py here')\n")
    p = _cli("boot", "--flash", flash, "--until", "registered", "--timestamps", "--json", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    assert "boot.py here" in p.stdout and "ms] aliyun_iot: state registered" in p.stdout
    assert "online" not in p.stdout  # stopped as soon as the state was reached
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["ok"] and result["states"][-1]["name"] == "registered"


def test_boot_fatal_line_names_the_error(tmp_path):
    main = (
        'print("aliyun_iot: state registering t=5")\n'
        'print("aliyun_iot: fatal Refused code=4: bad ProductSecret (rc=4)")\n'
        'raise SystemExit("not reached by a real firmware")\n'
    )
    p = _cli("boot", "--flash", _flash(tmp_path, main), "--until", "online", "--timeout", "20")
    assert p.returncode == 1
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "fatal Refused code=4: bad ProductSecret" in err[0]


def test_boot_main_crash_and_main_return(tmp_path):
    crash = 'print("aliyun_iot: state boot t=0")\nraise ValueError("config broken")\n'
    r = boot(_flash(tmp_path, crash), until="online", timeout=20)
    assert not r.ok and r.error == "ValueError"
    assert "main.py crashed: ValueError: config broken" in r.reason
    assert any("Traceback" in text for _, text in r.lines)

    (tmp_path / "flash" / "main.py").write_text("print('done')\n")
    r = boot(tmp_path / "flash", until="online", timeout=20)
    assert not r.ok and r.error == "MainReturned"
    r = boot(tmp_path / "flash", until="exit", timeout=20)
    assert r.ok and "done" in [text for _, text in r.lines]


def test_boot_timeout_and_reboot_loop(tmp_path):
    r = boot(_flash(tmp_path, "import time\nwhile True:\n    time.sleep_ms(20)\n"), until="online", timeout=1)
    assert not r.ok and r.error == "Timeout" and "timeout after 1s" in r.reason

    (tmp_path / "flash" / "main.py").write_text("import machine\nmachine.reset()\n")
    r = boot(tmp_path / "flash", until="online", timeout=20, max_reboots=2)
    assert not r.ok and r.error == "RebootLoop" and r.reboots == 3


def test_boot_env_mac_and_wifi_reach_the_shims(tmp_path):
    main = (
        "import machine, network, os, time\n"
        "w = network.WLAN(network.STA_IF)\nw.active(True)\nw.connect('lab', 'secret')\n"
        "for _ in range(200):  # the port's first attempts look like connecting (reason 15)\n"
        "    if w.status() != network.STAT_CONNECTING: break\n"
        "    time.sleep_ms(10)\n"
        "print('mac', machine.unique_id().hex(), 'status', w.status(), 'x', os.getenv('VBOARD_X'))\n"
    )
    flash = _flash(tmp_path, main)
    r = boot(
        flash, until="exit", timeout=20, mac="02:00:00:00:00:07", wifi="lab:other", env={"VBOARD_X": "1"}
    )
    assert r.ok, r.reason
    assert "mac 020000000007 status 202 x 1" in [t for _, t in r.lines]  # 202: wrong password


def test_cli_usage_errors(tmp_path):
    p = _cli("boot", "--flash", tmp_path / "missing")
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = _cli("serve", "--flash", tmp_path, "--mac", "nonsense")
    assert p.returncode == 2 and "--mac" in p.stderr
    assert _cli("--help").returncode == 0
