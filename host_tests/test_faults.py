"""The fault matrix: hostile networks, hostile servers, bad storage and bad config, on the MicroPython unix
port (the real VM, real mbedTLS). Every row ends in success or in a named error within its deadline; retryable
failures are followed by an attempt that succeeds; fatal ones stop after one attempt."""

import json

import pytest

from aliyun_iot import (
    IotError,  # the firmware (pyproject's pytest pythonpath)
    store,
)
from aliyun_iot import config as fw_config
from host_tests.plugins.firmware import board_flash, boot
from host_tests.plugins.runtimes import assert_device_ok, device_script, micropython_exe, run_script
from tools.emulator.process import EmulatorProcess
from tools.faultproxy import FaultProxy

PK, PS = "a1FaultMtx", "Ps3cretForFaults0001"
RT = "micropython"
RETRYABLE = ("timeout", "closed", "network", "tls_handshake", "tls_eof", "bad_reply", "connack3")
FAST = {"timeout": 2, "attempts": 3, "backoff_ms": 100}

pytestmark = pytest.mark.skipif(micropython_exe() is None, reason="needs the MicroPython unix port")


def _emulator(base, *extra):
    e = EmulatorProcess(
        base / "state",
        base / "emulator.log",
        ["--product", "%s=%s" % (PK, PS), "--register-linger", "3", *extra],
    )
    return e.start()


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = _emulator(tmp_path_factory.mktemp("faults-emu"))
    yield e
    e.stop()


_n = [0]


def _device(emu, prefix):
    _n[0] += 1
    dn = "%s-%d" % (prefix, _n[0])
    emu.add_device(PK, dn)
    return dn


def _secrets(emu, dn):
    dev = emu.device(PK, dn) or {}
    return [PS, dev.get("secret"), dev.get("token")]


def _failures(stdout):
    """The error codes of the failed attempts, from lines `attempt N failed: ... (code); retrying`."""
    return [
        ln.rsplit("(", 1)[1].split(")")[0]
        for ln in stdout.splitlines()
        if " failed: " in ln and "attempt" in ln
    ]


# ---------------------------------------------------------------- network, below TLS


@pytest.mark.parametrize(
    "faults",
    [
        {"delay_ms": 60},
        {"chunk": 1},
        {"stall": "tcp", "faulty": 1},
        {"stall": "tls", "faulty": 1},
        {"stall": "connack", "faulty": 1},
        {"stall": "reply", "faulty": 1},
        {"reset_after": 200, "faulty": 1},
    ],
    ids=["delay", "1-byte-chunks", "stall-tcp", "stall-tls", "stall-connack", "stall-reply", "reset"],
)
def test_network_fault_ends_named_and_later_attempt_succeeds(emu, flash, faults, secret_guard):
    dn = _device(emu, "net")
    with FaultProxy(("127.0.0.1", emu.port), **faults) as proxy:
        board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, port=proxy.port, **FAST)
        b = boot(RT, flash)
    secret_guard.secret(*_secrets(emu, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "online", b.stdout + b.stderr
    fails = _failures(b.stdout)
    if faults.get("faulty"):
        assert len(fails) == 1 and fails[0] in RETRYABLE, b.stdout
    else:
        assert fails == [], b.stdout
    assert emu.device(PK, dn)["activated"]


def test_cut_after_n_bytes_across_the_whole_exchange(emu, tmp_path, secret_guard, record_property):
    # A clean registration through the proxy gives the exchange's size; then cut it at points across it.
    dn = _device(emu, "cut-clean")
    flash = tmp_path / "clean"
    flash.mkdir()
    with FaultProxy(("127.0.0.1", emu.port)) as proxy:
        board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, port=proxy.port, **FAST)
        assert boot(RT, flash).result == "online"
    total = proxy.conn_bytes[0]  # the registration connection closes first
    points = sorted(
        {1, 5, 50, 120, 300, 600, 1000, 1500, 1800, 1900, 2000, 2100, total - 40, total - 5, total - 1}
    )
    points = [n for n in points if 0 < n < total]
    outcomes = []
    for n in points:
        dn = _device(emu, "cut")
        flash = tmp_path / ("cut%d" % n)
        flash.mkdir()
        with FaultProxy(("127.0.0.1", emu.port), cut_after=n, faulty=1) as proxy:
            board_flash(
                emu, flash, product_key=PK, product_secret=PS, device_name=dn, port=proxy.port, **FAST
            )
            b = boot(RT, flash)
        secret_guard.secret(*_secrets(emu, dn))
        secret_guard.output(b.stdout, b.stderr)
        assert b.result == "online", "cut after %d bytes:\n%s" % (n, b.stdout + b.stderr)
        fails = _failures(b.stdout)
        assert all(code in RETRYABLE for code in fails), (n, fails)
        assert len(fails) <= 1, (n, b.stdout)
        cred = store.decode((flash / "aliyun_iot.cred").read_bytes())
        assert cred["ds"] == emu.device(PK, dn)["secret"]
        outcomes.append("%d:%s" % (n, fails[0] if fails else "ok"))
    record_property(
        "measure",
        "cut sweep: %d-byte registration exchange, %d cut points: %s"
        % (total, len(points), " ".join(outcomes)),
    )


# ---------------------------------------------------------------- platform


@pytest.mark.parametrize("rc", [1, 2, 3, 4, 5])
def test_every_connack_code(emu, flash, rc, secret_guard):
    dn = _device(emu, "rc%d" % rc)
    emu.fault("%s/%s" % (PK, dn), "--refuse", str(rc), "--times", "1")
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, **FAST)
    b = boot(RT, flash)
    secret_guard.secret(*_secrets(emu, dn))
    secret_guard.output(b.stdout, b.stderr)
    if rc == 3:  # server unavailable: retried, and the next attempt succeeds
        assert b.result == "online", b.stdout
        assert _failures(b.stdout) == ["connack3"]
    else:
        assert b.result == "fatal IotError connack%d" % rc, b.stdout
        assert b.attempts == 1
        assert not (flash / "aliyun_iot.cred").exists()


def _reply_payload(dn, **override):
    d = {"productKey": PK, "deviceName": dn, "deviceSecret": "S" * 32}
    d.update(override)
    return json.dumps({k: v for k, v in d.items() if v is not None})


@pytest.mark.parametrize(
    "case",
    [
        "close",
        "topic",
        "not-json",
        "no-secret",
        "empty-secret",
        "long-secret",
        "huge-secret",
        "other-device",
        "huge-length",
    ],
)
def test_bad_platform_reply_is_named_and_retried(mpy_firmware, emu, flash, case, secret_guard):
    dn = _device(emu, "bad")
    target = "%s/%s" % (PK, dn)
    switches = {
        "close": ["--close"],
        "topic": ["--topic", "/ext/unexpected"],
        "not-json": ["--payload", "this is not json"],
        "no-secret": ["--payload", _reply_payload(dn, deviceSecret=None)],
        "empty-secret": ["--payload", _reply_payload(dn, deviceSecret="")],
        "long-secret": ["--payload", _reply_payload(dn, deviceSecret="L" * 300)],
        "huge-secret": ["--payload", _reply_payload(dn, deviceSecret="H" * 20000)],
        "other-device": ["--payload", _reply_payload("someone-else")],
        "huge-length": ["--huge"],
    }[case]
    emu.fault(target, *switches, "--times", "1")
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, **FAST)
    # A small heap: a reply the firmware tried to allocate in full would end in MemoryError instead.
    # The package runs as bytecode, as on a board (compiling the source would take most of this heap).
    b = boot(RT, flash, heapsize="96K", path=[mpy_firmware.lib], shims=mpy_firmware.shims)
    secret_guard.secret(*_secrets(emu, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "online", b.stdout + b.stderr
    want = "closed" if case == "close" else "bad_reply"
    assert _failures(b.stdout) == [want], b.stdout
    assert "MemoryError" not in b.stdout + b.stderr
    assert store.decode((flash / "aliyun_iot.cred").read_bytes())["ds"] == emu.device(PK, dn)["secret"]


def test_two_replies_take_the_first_and_register_once(emu, flash, secret_guard):
    dn = _device(emu, "double")
    emu.fault("%s/%s" % (PK, dn), "--double", "--times", "1")
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, **FAST)
    b = boot(RT, flash)
    secret_guard.secret(*_secrets(emu, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "online" and b.attempts == 1, b.stdout


# ---------------------------------------------------------------- TLS


@pytest.mark.parametrize("fault", ["unknownca", "wronghost", "expired", "plain"])
def test_tls_faults_are_named_and_fatal(tmp_path, flash, fault, secret_guard):
    e = _emulator(tmp_path, "--tls-fault", fault)
    try:
        dn = _device(e, "tls")
        board_flash(e, flash, product_key=PK, product_secret=PS, device_name=dn, **FAST)
        b = boot(RT, flash)
    finally:
        e.stop()
    secret_guard.secret(PS)
    secret_guard.output(b.stdout, b.stderr)
    # The emulator's plain-TCP port answers a ClientHello in clear, as an MQTT server answering garbage can.
    want = "tls_protocol" if fault == "plain" else "tls_verify"
    assert b.result == "fatal IotError " + want, b.stdout + b.stderr
    assert b.attempts == 1, b.stdout


# ---------------------------------------------------------------- storage


def test_flash_full_during_the_write_keeps_the_old_credential():
    assert_device_ok(run_script(RT, device_script("store_faults.py")))


@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty"])
def test_damaged_credential_at_boot_is_reported_not_replaced(emu, flash, damage, secret_guard):
    dn = _device(emu, "dmg")
    board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, **FAST)
    assert boot(RT, flash).result == "online"
    path = flash / "aliyun_iot.cred"
    data = path.read_bytes()
    data = {
        "truncated": data[: len(data) // 2],
        "garbled": data[:20] + b"\x00\xff" + data[22:],
        "empty": b"",
    }[damage]
    path.write_bytes(data)
    b = boot(RT, flash)
    secret_guard.secret(*_secrets(emu, dn))
    secret_guard.output(b.stdout, b.stderr)
    assert b.result == "fatal IotError corrupt", b.stdout
    assert "registering" not in b.states
    assert path.read_bytes() == data


# ---------------------------------------------------------------- config


def _config_cases():
    good = {"product_key": PK, "product_secret": PS, "host": "127.0.0.1", "port": 9}
    cases = []
    for key in ("product_key", "product_secret"):
        cases.append(("missing-" + key, {k: v for k, v in good.items() if k != key}, key))
    wrong_type = {"s": 5, "i": "5", "b": 1}
    for key, (typ, _default) in fw_config.SPEC.items():
        cases.append(("type-" + key, dict(good, **{key: wrong_type[typ]}), key))
    out_of_range = {
        "product_key": "",
        "product_secret": "",
        "device_name": "abc",
        "port": 65536,
        "auth_port": 0,
        "mode": "mqtt",
        "sign_method": "hmacsha512",
        "keepalive": 29,
        "led_pin": 49,
        "timeout": 0,
        "attempts": 21,
        "backoff_ms": 99,
        "retry_cap_s": 0,
        "refused_cap_s": 86401,
        "wdt_s": 29,
        "ota_trial_boots": 0,
        "ota_trial_s": 59,
    }
    for key, value in out_of_range.items():
        cases.append(("range-" + key, dict(good, **{key: value}), key))
    cases.append(("range-keepalive-high", dict(good, keepalive=1201), "keepalive"))
    cases.append(("range-wdt-under-timeout-plus-15", dict(good, timeout=20, wdt_s=34), "wdt_s"))
    cases.append(("range-device-name-chars", dict(good, device_name="bad name!"), "device_name"))
    cases.append(("unknown-key", dict(good, product_secert="x"), "product_secert"))
    return [{"name": n, "config": c, "key": k} for n, c, k in cases]


# What only the host checks (tools/config_schema.py, run by provision on top of the firmware's check):
# character sets and lengths the platform or the network refuse later. The board does not spend RAM on them.
HOST_ONLY = {
    "product_key": "a1/bad",
    "product_secret": "has space",
    "region": "x",
    "instance_id": "bad id!",
    "host": "bad host",
    "auth_host": "bad_host!",
    "wifi_ssid": "s" * 33,
    "wifi_password": "p" * 65,
    "ca": "c" * 65,
}


def test_host_check_adds_what_the_platform_refuses():
    from tools import config_schema

    good = {"product_key": PK, "product_secret": PS}
    for key, value in {**HOST_ONLY, "region": "cn-beijing"}.items():
        raw = dict(good, **{key: value})
        if key == "region":
            raw["mode"] = "regnwl"  # regnwl is offered in cn-shanghai only
        fw_config.validate(raw)  # the device lets it through...
        with pytest.raises(IotError) as e:
            config_schema.validate(raw)  # ...the host does not, and names the key
        assert key in e.value.msg
    # every string key is checked somewhere beyond its type
    strings = {k for k, (t, _d) in fw_config.SPEC.items() if t == "s"}
    assert strings <= set(HOST_ONLY) | {"device_name", "mode", "sign_method"}
    assert config_schema.validate(good)["mode"] == "register"


def test_bad_config_refused_before_the_network(tmp_path, runtime):
    cases = _config_cases()
    bools = {k for k, (t, _d) in fw_config.SPEC.items() if t == "b"}
    # Every key is checked for type on the device; every key with a device rule for that rule too.
    assert {c["key"] for c in cases if c["name"].startswith("type-")} == set(fw_config.SPEC)
    device_rules = set(fw_config.RANGES) | set(fw_config.CHOICES) | {"device_name", "wdt_s"}
    device_rules |= {"product_key", "product_secret"}
    ranged = {c["key"] for c in cases if c["name"].startswith("range-")}
    assert ranged == device_rules and not ranged & bools
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    oks = assert_device_ok(run_script(runtime, device_script("config_faults.py"), args=[path]))
    assert len(oks) == len(cases)


@pytest.mark.parametrize("code", [-0x7F00, -0x0010])
def test_tls_out_of_memory_has_its_own_retryable_code(code):
    # mbedTLS SSL_ALLOC_FAILED / MPI_ALLOC_FAILED ("RSA - BIGNUM Memory allocation failed" on an ESP32)
    from aliyun_iot.fatal import hint
    from aliyun_iot.neterr import classify

    err = classify(OSError(code, "MBEDTLS_ERR"), "connection to h:8883")
    assert (err.code, err.retry) == ("tls_nomem", True)
    assert "freeze the package" in hint("tls_nomem")
    # and not the generic handshake failure it used to be
    assert classify(OSError(-0x7780), "x").code == "tls_protocol"
