"""First boot end to end: the firmware's boot flow on CPython and on the MicroPython unix port, against the
emulator over TLS with certificate and hostname verification."""

import pytest

from aliyun_iot import store  # the firmware's own decoder, run on the host
from host_tests.plugins.firmware import board_flash, boot
from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script

PK, PS = "a1FirstBoot", "Ps3cretForFirstBoot0"


def _secrets(emu, pk, dn):
    dev = emu.device(pk, dn) or {}
    return [PS, dev.get("secret"), dev.get("token")]


@pytest.fixture(scope="module")
def emu(request, tmp_path_factory):
    # One emulator for the module: each test uses its own DeviceName, so tests do not interfere.
    from tools.emulator.process import EmulatorProcess

    base = tmp_path_factory.mktemp("emu")
    e = EmulatorProcess(
        base / "state",
        base / "emulator.log",
        ["--product", "%s=%s" % (PK, PS), "--regnwl", PK, "--register-linger", "3"],
    )
    e.start()
    yield e
    e.stop()


@pytest.mark.parametrize("mode", ["register", "regnwl", "https"])
def test_first_boot_registers_persists_then_skips(runtime, flash, emu, mode, secret_guard):
    dn = "fb-%s-%s" % (mode, runtime[:2])
    if mode != "regnwl":
        emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, mode=mode)

    first = boot(runtime, flash)
    secret_guard.secret(*_secrets(emu, PK, dn))
    secret_guard.output(first.stdout, first.stderr)
    assert first.result == "online", first.stdout + first.stderr
    assert first.states == [
        "boot",
        "wifi",
        "clock",
        "registering",
        "stored",
        "registered",
        "connecting",
        "connected",
        "online",
    ]
    assert first.attempts == 1

    stored = (flash / "aliyun_iot.cred").read_bytes()
    cred = store.decode(stored)
    dev = emu.device(PK, dn)
    assert dev["activated"] is True
    if mode == "regnwl":
        assert cred["kind"] == "token" and cred["tok"] == dev["token"] and cred["cid"] == dev["client_id"]
    else:
        assert cred["kind"] == "secret" and cred["ds"] == dev["secret"]
    assert (cred["pk"], cred["dn"]) == (PK, dn)
    assert not (flash / "aliyun_iot.cred.tmp").exists()

    # Reboot: the stored credential is used; registering again would be refused (activated).
    second = boot(runtime, flash)
    secret_guard.output(second.stdout, second.stderr, emu.log())
    assert second.result == "online", second.stdout + second.stderr
    assert "registering" not in second.states
    assert "registration skipped" in second.stdout
    assert (flash / "aliyun_iot.cred").read_bytes() == stored


@pytest.mark.parametrize("api", ["1.3.4", "1.4.0", "1.6"])
def test_each_umqtt_generation_registers_over_verified_tls(runtime, flash, emu, api, secret_guard):
    dn = "gen-%s-%s" % (api.replace(".", ""), runtime[:2])
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn)
    b = boot(runtime, flash, env={"UMQTT_API": api})
    secret_guard.secret(*_secrets(emu, PK, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "online", b.stdout + b.stderr
    # Detected from what the constructor and connect() accept, never from a version number.
    assert "umqtt.simple API generation: %s\n" % api in b.stdout
    assert emu.device(PK, dn)["activated"] is True


def test_wrong_product_secret_stops_after_one_attempt(runtime, flash, emu, secret_guard):
    dn = "wrongps-" + runtime[:2]
    emu.add_device(PK, dn)
    wrong = "NotTheProductSecret1"
    board_flash(emu, flash, product_key=PK, product_secret=wrong, device_name=dn, attempts=5)
    b = boot(runtime, flash)
    secret_guard.secret(PS, wrong)
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "fatal IotError connack4", b.stdout + b.stderr
    assert b.attempts == 1
    assert "wrong ProductSecret" in b.stdout and "ResetThing" in b.stdout
    assert not (flash / "aliyun_iot.cred").exists()
    assert emu.device(PK, dn)["secret"] is None


def test_quiet_platform_times_out_then_retry_succeeds(runtime, flash, emu, secret_guard):
    dn = "quiet-" + runtime[:2]
    emu.add_device(PK, dn)
    emu.fault("%s/%s" % (PK, dn), "--quiet", "--times", "1")
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, timeout=2)
    b = boot(runtime, flash)
    secret_guard.secret(*_secrets(emu, PK, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "online", b.stdout + b.stderr
    assert b.attempts == 2
    assert "attempt 1 failed: no registration reply within 2 s (timeout)" in b.stdout


def test_activated_device_that_lost_its_secret_is_told_to_reset(runtime, flash, emu, tmp_path, secret_guard):
    dn = "lost-" + runtime[:2]
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn)
    assert boot(runtime, flash).result == "online"
    (flash / "aliyun_iot.cred").unlink()  # the secret is lost after activation
    b = boot(runtime, flash)
    secret_guard.secret(*_secrets(emu, PK, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "fatal IotError connack4"
    assert "already activated" in b.stdout and "ResetThing" in b.stdout
    emu.reset(PK, dn)
    assert boot(runtime, flash).result == "online"


def test_corrupt_credential_is_reported_never_replaced(runtime, flash, emu, secret_guard):
    dn = "corrupt-" + runtime[:2]
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn)
    assert boot(runtime, flash).result == "online"
    path = flash / "aliyun_iot.cred"
    damaged = path.read_bytes().replace(b'"ds": "', b'"ds": "X', 1)
    path.write_bytes(damaged)
    b = boot(runtime, flash)
    secret_guard.secret(*_secrets(emu, PK, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "fatal IotError corrupt"
    assert "registering" not in b.states
    assert path.read_bytes() == damaged


def test_application_session_subscribe_ping_kickoff_reconnect(runtime, flash, emu, secret_guard):
    dn = "app-" + runtime[:2]
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, backoff_ms=100)
    r = run_script(runtime, device_script("session_app.py"), cwd=flash, timeout=90)
    secret_guard.secret(*_secrets(emu, PK, dn))
    secret_guard.output(r.stdout, r.stderr)
    assert assert_device_ok(r) == [
        "callback-receives",
        "post-after-idle-waits",
        "kicked-off-then-back",
        "resubscribed-after-reconnect",
        "backoff-capped",
    ]


def test_status_led_follows_the_boot(runtime, flash, emu, tmp_path):
    dn = "led-" + runtime[:2]
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, led_pin=2)
    led = tmp_path / "led.log"
    assert boot(runtime, flash, env={"VBOARD_LED": str(led)}).result == "online"
    assert led.read_text().split("\n")[:2] == ["2 1", "2 0"]  # on while working, off once online


@pytest.mark.parametrize(
    "env,cfg,result,attempts",
    [
        ({"VBOARD_WIFI": "lab:other-password"}, {}, "fatal IotError wifi_auth", 0),
        ({"VBOARD_WIFI": "elsewhere:x"}, {}, "fatal IotError wifi_noap", 0),
        # an access point slower than the board: not found, then refusing, then joined (the port retries)
        ({"VBOARD_WIFI_SEQ": "201,202,join", "VBOARD_WIFI_DELAY_MS": "700"}, {}, "online", 1),
        ({"VBOARD_WIFI_SEQ": "15", "VBOARD_WIFI_DELAY_MS": "200"}, {"timeout": 1},
         "fatal IotError wifi_timeout", 0),
        ({"VBOARD_NTP_FAIL": "2"}, {}, "online", 1),
        ({"VBOARD_NTP_FAIL": "3"}, {}, "fatal IotError ntp", 0),
        ({"VBOARD_NTP_FAIL": "9"}, {"ntp": False}, "online", 1),
    ],
    ids=["wifi-wrong-password", "wifi-no-ap", "wifi-slow-ap", "wifi-never-joins", "ntp-recovers", "ntp-dead",
         "ntp-off"],
)
def test_wifi_and_clock(runtime, flash, emu, env, cfg, result, attempts):
    dn = "net-%s-%s" % (len(emu.registry()["devices"]), runtime[:2])
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, **cfg)
    b = boot(runtime, flash, env=env)
    assert b.result == result, b.stdout
    assert b.attempts == attempts
    if result in ("fatal IotError wifi_auth", "fatal IotError wifi_noap"):
        assert "hint: " in b.stdout, b.stdout


def test_session_state_stays_bounded(runtime, flash, emu, secret_guard):
    dn = "bounds-" + runtime[:2]
    emu.add_device(PK, dn)
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn)
    r = run_script(runtime, device_script("session_bounds.py"), cwd=flash, timeout=90)
    secret_guard.secret(*_secrets(emu, PK, dn))
    secret_guard.output(r.stdout, r.stderr)
    assert assert_device_ok(r) == [
        "unawaited-replies-not-kept", "post-after-300", "no-reconnect", "uptime-across-the-wrap"
    ]


def test_a_fatal_boot_blinks_until_the_reset(runtime, flash, emu, tmp_path, secret_guard):
    # The real main.py: a refused registration is fatal, so recover() shows the fatal LED pattern and
    # resets the board after refused_cap_s (here 1 s) instead of parking it with the LED off.
    from host_tests.plugins.runtimes import FIRMWARE

    dn = "fatal-" + runtime[:2]
    emu.add_device(PK, dn)
    wrong = "NotTheProductSecret2"
    board_flash(emu, flash, product_key=PK, product_secret=wrong, device_name=dn, led_pin=2, refused_cap_s=1)
    (flash / "main.py").write_bytes((FIRMWARE / "main.py").read_bytes())
    led = tmp_path / "led.log"
    r = run_script(runtime, str(flash / "main.py"), cwd=flash, env={"VBOARD_LED": str(led)}, timeout=60)
    secret_guard.secret(PS, wrong)
    secret_guard.output(r.stdout, r.stderr)
    assert r.rc == 99, r.stdout + r.stderr  # machine.reset(): the virtual board boots again
    assert "fatal IotError code=connack4" in r.stdout and "aliyun_iot: hint: " in r.stdout
    assert "restarting in" in r.stdout
    writes = led.read_text().split()[1::2]  # "<pin> <value>" lines -> the values
    assert writes[0] == "1" and writes[-6:] == ["1", "0"] * 3, writes  # on while working, then blinking
