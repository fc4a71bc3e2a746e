"""OTA end to end on both runtimes: the firmware against the emulator's OTA console (tools/emulator/ota.py).

A task is pushed (or handed over on firmware/get); the board downloads the bundle over verified HTTPS (cut and
resumed with Range), checks its digest, unpacks it beside the running code, switches with one rename and
resets; boot.py then runs the new bundle on trial, kept once online; a bundle that does not come online is
rolled back. config.json and the credential are byte-identical after every update.
"""

import json
import re

import pytest

from host_tests.plugins.firmware import board_flash
from host_tests.plugins.runtimes import REPO, assert_device_ok, device_script, run_script
from tools import ota_package

PK, PS = "a1OtaTest01", "Ps3cretForOtaTest01"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    from tools.emulator.process import EmulatorProcess

    base = tmp_path_factory.mktemp("emu")
    e = EmulatorProcess(base / "state", base / "emulator.log", ["--product", "%s=%s" % (PK, PS),
                                                                  "--register-linger", "1"])
    e.start()
    yield e
    e.stop()


def _bundle(tmp_path, version, main=None):
    path = tmp_path / ("app-%s.bin" % version)
    path.write_bytes(ota_package.build(version, ota_package.collect(main=main)))
    return path


def _board(emu, flash, dn, runtime):
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, backoff_ms=200)
    (flash / "boot.py").write_bytes((REPO / "firmware" / "boot.py").read_bytes())


def _boot(runtime, flash, secs=20, *more):
    r = run_script(runtime, device_script("ota_app.py"), cwd=flash, args=(str(secs), *more), timeout=120)
    assert_device_ok(r)
    return r


def _status(emu, dn):
    return json.loads(emu.cli("ota", "status", "%s/%s" % (PK, dn)).stdout)


def _frozen(flash):
    return {p: (flash / p).read_bytes() for p in ("config.json", "aliyun_iot.cred")}


def test_update_cut_twice_resumed_switched_then_kept(runtime, flash, emu, tmp_path, secret_guard):
    dn = "ota-up-" + runtime[:2]
    _board(emu, flash, dn, runtime)
    first = _boot(runtime, flash, 3)  # registers; reports the factory version
    assert "LOADER factory" in first.stdout
    keep = _frozen(flash)
    pkg = _bundle(tmp_path, "2.0.0")
    emu.cli("ota", "push", "%s/%s" % (PK, dn), str(pkg), "--version", "2.0.0", "--sign-method", "SHA256",
            "--cut-at", "20000", "--cut-at", "50000")
    r = _boot(runtime, flash)
    assert "RESET 99" in r.stdout, r.stdout + r.stderr
    st = _status(emu, dn)
    assert st["task"]["requests"] == [0, 20000, 50000], st
    assert st["steps"][-1] == ["0", "downloading"]
    state = json.loads((flash / "ota" / "state").read_text())
    assert state == {"cur": "a", "ver": "2.0.0", "old": "", "ov": "0.3.0", "try": 3, "t": 600}
    assert not (flash / "ota" / "dl").exists()
    # The next boot runs the bundle on trial; online, it is kept and 2.0.0 reported.
    r = _boot(runtime, flash, 3)
    assert "LOADER /ota/a" in r.stdout and "PACKAGE bundle" in r.stdout, r.stdout
    st = _status(emu, dn)
    assert st["state"] == "done" and st["versions"][-1] == "2.0.0", st
    assert ["100", "updated"] in st["steps"]
    assert json.loads((flash / "ota" / "state").read_text()) == {"cur": "a", "ver": "2.0.0", "old": "",
                                                                "ov": "0.3.0"}
    assert _frozen(flash) == keep


@pytest.mark.parametrize("fault,step,desc", [("--wrong-digest", "-3", "MD5 mismatch"),
                                              ("--expired", "-2", "http 403")])
def test_refused_download_reported_and_nothing_switched(runtime, flash, emu, tmp_path, fault, step, desc):
    dn = "ota-%s-%s" % (fault[2:5], runtime[:2])
    _board(emu, flash, dn, runtime)
    _boot(runtime, flash, 3)
    keep = _frozen(flash)
    emu.cli("ota", "push", "%s/%s" % (PK, dn), str(_bundle(tmp_path, "2.1.0")), "--version", "2.1.0", fault)
    r = _boot(runtime, flash, 20)
    assert "RESET" not in r.stdout and "CONNECTS 2" in r.stdout, r.stdout
    st = _status(emu, dn)
    assert st["step"] == step and st["desc"].startswith(desc), st
    assert st["state"] == "failed"
    dl = flash / "ota" / "dl"  # kept to resume the same file later: here nothing of it arrived
    assert not (flash / "ota" / "state").exists() and (not dl.exists() or dl.stat().st_size == 0)
    assert _frozen(flash) == keep


def test_bundle_that_never_comes_online_rolls_back(runtime, flash, emu, tmp_path):
    dn = "ota-rb-" + runtime[:2]
    _board(emu, flash, dn, runtime)
    _boot(runtime, flash, 3)
    keep = _frozen(flash)
    # A bundle whose main.py never comes online, staged and switched to as otajob leaves it.
    bad = tmp_path / "bad_main.py"
    bad.write_text("raise SystemExit(99)\n")
    slot = flash / "ota" / "a"
    slot.mkdir(parents=True)
    (slot / "main.py").write_bytes(bad.read_bytes())
    (flash / "ota" / "state").write_text(json.dumps({"cur": "a", "ver": "9.9.9", "old": "", "ov": "0.3.0",
                                                     "try": 1}))
    r = _boot(runtime, flash, 1, "main")  # the trial boot: its main.py resets the board
    assert "LOADER /ota/a" in r.stdout and "RESET 99" in r.stdout, r.stdout
    r = _boot(runtime, flash, 3)  # out of boots: the factory layout comes back and says so
    assert "LOADER factory" in r.stdout, r.stdout
    st = _status(emu, dn)
    assert st["steps"][-1] == ["-1", "rolled back: 9.9.9 did not come online"], st
    assert st["versions"][-1] == "0.3.0"
    assert json.loads((flash / "ota" / "state").read_text()) == {"cur": "", "ver": "0.3.0"}
    assert _frozen(flash) == keep


def test_ota_package_names_only_the_application(tmp_path):
    data = ota_package.build("1.0", ota_package.collect())
    head = json.loads(data.split(b"\n", 2)[1])
    names = [n for n, _, _ in head["files"]]
    assert names[0] == "main.py" and "aliyun_iot/otajob.py" in names
    assert not {"boot.py", "config.json", "aliyun_iot.cred"} & set(names)
    with pytest.raises(ValueError, match="never part"):
        ota_package.build("1.0", [("config.json", b"{}")])
    assert re.match(rb"ALYB1\n", data)


def test_push_parsing_tolerant_and_refusals(runtime):
    oks = assert_device_ok(run_script(runtime, device_script("ota_parse.py"), timeout=60))
    assert len(oks) == 17
    assert all(n.startswith(("md5", "sha", "old", "with", "module", "refuse")) for n in oks)


def test_power_cut_at_every_write_of_an_update_boots_a_whole_bundle(runtime, flash, record_property):
    r = run_script(runtime, device_script("ota_powercut.py"), cwd=flash, timeout=280, heapsize="4m",
                   args=(str(REPO / "firmware" / "boot.py"),))
    oks = set(assert_device_ok(r))  # CPython: SKIP (no vfs.VfsLfs2)
    cuts = re.findall(r"^CUTS (\w+) (\w+) checked=(\d+) ops=(\d+)$", r.stdout, re.M)
    assert {(s, m) for s, m, _, _ in cuts} == {(s, m) for s in ("first", "second", "third", "rollback")
                                               for m in ("clean", "torn")}, r.stdout
    for s, m, checked, ops in cuts:
        assert int(checked) == int(ops) > 0 and "%s %s" % (s, m) in oks
    record_property("measure", "OTA power-cut points: " + ", ".join("%s/%s=%s" % c[:3] for c in cuts))


def test_session_on_up_after_every_connection_errors_reported(runtime, flash, emu):
    dn = "ota-hook-" + runtime[:2]
    _board(emu, flash, dn, runtime)
    _boot(runtime, flash, 1)  # registers
    r = run_script(runtime, device_script("session_hook.py"), cwd=flash, timeout=90)
    assert assert_device_ok(r) == ["called-after-reconnect", "error-reported", "session-carries-on",
                                   "called-after-every-connection"]


def test_console_cli_errors_and_the_served_file(emu, tmp_path):
    import http.client
    import ssl

    dn = "ota-cli"
    emu.add_device(PK, dn)
    pkg = _bundle(tmp_path, "3.0.0")
    r = emu.cli("ota", "push", PK + "/nobody", str(pkg), "--version", "3.0.0", check=False)
    assert r.returncode == 2 and "unknown device" in r.stderr
    target = "%s/%s" % (PK, dn)
    r = emu.cli("ota", "push", target, str(pkg), "--version", "3.0.0", "--cut-always", check=False)
    assert r.returncode == 2 and "--cut-always needs --cut-at" in r.stderr
    r = emu.cli("ota", "status", PK + "/ota-none", check=False)
    assert r.returncode == 2 and "no OTA task" in r.stderr
    out = emu.cli("ota", "push", "%s/%s" % (PK, dn), str(pkg), "--version", "3.0.0", "--cut-at", "100").stdout
    assert "3.0.0" in out and "md5" in out and "sha256" in out
    task = emu.registry()["ota"]["%s/%s" % (PK, dn)]

    def get(start=None):
        c = http.client.HTTPSConnection("localhost", emu.https_port, context=emu.client_context(), timeout=10)
        c.request("GET", "/ota/%s/package.bin" % task["token"], headers={"Range": "bytes=%d-" % start}
                  if start is not None else {})
        resp = c.getresponse()
        try:
            return resp.status, resp.getheader("Content-Range"), resp.read()
        except (http.client.IncompleteRead, ssl.SSLError, ConnectionError) as e:
            return resp.status, "cut", getattr(e, "partial", b"")
        finally:
            c.close()

    data = pkg.read_bytes()
    assert get() == (200, "cut", data[:100])  # the cut, once
    assert get(100) == (206, "bytes 100-%d/%d" % (len(data) - 1, len(data)), data[100:])
    assert get() == (200, None, data)
    assert get(len(data))[0] == 416
    assert emu.cli("ota", "status", "%s/%s" % (PK, dn)).stdout.count('"requests"') == 1


def test_slow_link_still_updates(runtime, flash, emu, tmp_path):
    dn = "ota-slow-" + runtime[:2]
    _board(emu, flash, dn, runtime)
    _boot(runtime, flash, 3)
    pkg = tmp_path / "slow.bin"
    pkg.write_bytes(ota_package.build("2.2.0", ota_package.collect(mpy=True)))
    emu.cli("ota", "push", "%s/%s" % (PK, dn), str(pkg), "--version", "2.2.0", "--slow", "50000")
    r = _boot(runtime, flash, 30)
    assert "RESET 99" in r.stdout, r.stdout
    assert json.loads((flash / "ota" / "state").read_text())["ver"] == "2.2.0"


def test_a_board_without_the_loader_refuses_the_task(runtime, flash, emu, tmp_path):
    dn = "ota-nold-" + runtime[:2]
    _board(emu, flash, dn, runtime)
    _boot(runtime, flash, 3)
    (flash / "boot.py").write_text("# the user's own boot.py\n")
    emu.cli("ota", "push", "%s/%s" % (PK, dn), str(_bundle(tmp_path, "2.3.0")), "--version", "2.3.0")
    r = _boot(runtime, flash, 5)
    assert "RESET" not in r.stdout
    st = _status(emu, dn)
    assert st["steps"][-1] == ["-1", "boot.py is not the OTA loader: deploy it first"], st
    assert not (flash / "ota" / "state").exists()
