"""The emulator against paho-mqtt 2 and http.client: the platform's behaviour from docs/protocol.md."""

import json
import os
import socket
import ssl
import stat

import pytest

from host_tests.plugins.emulator import (
    PahoDevice,
    mqtt_connect,
    mqtt_register,
    register_identity,
    secret_identity,
)
from host_tests.plugins.wire import (
    connect_packet,
    https_register,
    raw_tls,
    read_packet,
)


def register(emu, pk, dn, ps, **kw):
    rc, topic, reply = mqtt_register(emu, pk, dn, ps, **kw)
    assert rc == 0
    assert topic == "/ext/register"
    assert list(reply) == ["productKey", "deviceName", "deviceSecret"]
    assert (reply["productKey"], reply["deviceName"]) == (pk, dn)
    return reply["deviceSecret"]


def connect_rc(emu, pk, dn, ds, **kw):
    rc, dev = mqtt_connect(emu, pk, dn, ds, **kw)
    dev.close()
    return rc


def post_property(dev, pk, dn, request_id="42"):
    body = {
        "id": request_id,
        "version": "1.0",
        "params": {"LightSwitch": 1},
        "method": "thing.event.property.post",
    }
    dev.publish("/sys/%s/%s/thing/event/property/post" % (pk, dn), json.dumps(body))
    return dev.message()


@pytest.mark.parametrize(
    "method,upper", [("hmacsha256", False), ("hmacsha1", True), ("hmacmd5", False), ("hmacsha256", True)]
)
def test_register_connect_and_post(prod, method, upper):
    emu, pk, ps = prod
    ds = register(emu, pk, "dev-0", ps, method=method, upper=upper)
    assert len(ds) == 32
    assert emu.device(pk, "dev-0")["activated"] is False
    rc, dev = mqtt_connect(emu, pk, "dev-0", ds, method=method, upper=upper)
    try:
        assert rc == 0
        topic, payload = post_property(dev, pk, "dev-0", request_id="123")
    finally:
        dev.close()
    assert topic == "/sys/%s/dev-0/thing/event/property/post_reply" % pk
    assert payload == (
        b'{"code":200,"data":{},"id":"123","message":"success",'
        b'"method":"thing.event.property.post","version":"1.0"}'
    )
    assert emu.device(pk, "dev-0")["activated"] is True


def test_sdk_style_client_id_and_no_timestamp(prod):
    emu, pk, ps = prod
    ds = register(emu, pk, "dev-1", ps)
    # The Python SDK: prefix "pk&dn", extra options; the signature needs no timestamp when none is sent.
    assert connect_rc(emu, pk, "dev-1", ds, method="hmacsha1", prefix="%s&dev-1" % pk) == 0
    assert connect_rc(emu, pk, "dev-1", ds, timestamp=None) == 0


def test_regnwl_then_connwl(prod):
    emu, pk, ps = prod
    emu.cli("product", pk, "--regnwl", "on")
    rc, topic, reply = mqtt_register(emu, pk, "new-device", ps, auth_type="regnwl")
    assert rc == 0 and topic == "/ext/regnwl"
    assert list(reply) == ["productKey", "deviceName", "clientId", "deviceToken"]
    dev_entry = emu.device(pk, "new-device")
    assert dev_entry["prereg"] is False and dev_entry["client_id"] == reply["clientId"]
    client_id = reply["clientId"] + "|securemode=-2,authType=connwl|"
    dev = PahoDevice(emu, client_id, "new-device&" + pk, reply["deviceToken"])
    try:
        assert dev.connect() == 0
        topic, payload = post_property(dev, pk, "new-device")
        assert json.loads(payload)["code"] == 200
    finally:
        dev.close()
    assert emu.device(pk, "new-device")["activated"] is True
    bad = PahoDevice(emu, client_id, "new-device&" + pk, reply["deviceToken"][::-1])
    try:
        assert bad.connect() == 4
    finally:
        bad.close()
    # Activated: regnwl is refused now, like register.
    assert mqtt_register(emu, pk, "new-device", ps, auth_type="regnwl")[0] == 4


def test_regnwl_needs_the_product_switch(prod):
    emu, pk, ps = prod
    assert mqtt_register(emu, pk, "other-device", ps, auth_type="regnwl")[0] == 4


def test_securemode_3_only_on_plain_tcp(prod):
    emu, pk, ps = prod
    ds = register(emu, pk, "dev-0", ps)
    assert connect_rc(emu, pk, "dev-0", ds, tls=False) == 0
    tls_on_plain_port = PahoDevice(emu, *secret_identity(pk, "dev-0", ds, securemode="2"), tls=False)
    plain_on_tls_port = PahoDevice(emu, *secret_identity(pk, "dev-0", ds, securemode="3"), tls=True)
    try:
        assert tls_on_plain_port.connect() == 2
        assert plain_on_tls_port.connect() == 2
    finally:
        tls_on_plain_port.close()
        plain_on_tls_port.close()


def test_registration_over_plain_tcp_is_refused(prod):
    emu, pk, ps = prod
    assert mqtt_register(emu, pk, "dev-0", ps, tls=False)[0] == 2
    assert emu.device(pk, "dev-0")["secret"] is None


def test_bad_credentials_are_4(prod):
    emu, pk, ps = prod
    assert mqtt_register(emu, pk, "dev-0", ps + "x")[0] == 4  # wrong ProductSecret
    assert mqtt_register(emu, pk, "not-added", ps)[0] == 4  # unknown device
    assert mqtt_register(emu, "a1nosuchpk", "dev-0", ps)[0] == 4  # unknown product
    ds = register(emu, pk, "dev-0", ps)
    assert connect_rc(emu, pk, "dev-0", ds[::-1]) == 4  # wrong DeviceSecret
    assert connect_rc(emu, pk, "dev-1", ds) == 4  # device without a secret
    emu.cli("product", pk, "--dynreg", "off")
    assert mqtt_register(emu, pk, "dev-2", ps)[0] == 4  # dynamic registration disabled


@pytest.mark.parametrize(
    "client_id",
    [
        "dev-0.PK|securemode=2,authType=register,signmethod=hmacsha256|",  # no random
        "dev-0.PK|securemode=2,authType=register,signmethod=hmacsha999,random=1|",  # unknown method
        "dev-0.PK|securemode=2,authType=registr,signmethod=hmacsha256,random=1|",  # unknown authType
        "dev-0.PK",  # no options at all
    ],
)
def test_bad_client_id_is_2(prod, client_id):
    emu, pk, ps = prod
    _, username, password = register_identity(pk, "dev-0", ps)
    dev = PahoDevice(emu, client_id.replace("PK", pk), username, password)
    try:
        assert dev.connect() == 2
    finally:
        dev.close()


def test_activation_blocks_registration_until_reset(prod):
    emu, pk, ps = prod
    first = register(emu, pk, "dev-0", ps)
    assert connect_rc(emu, pk, "dev-0", first) == 0
    assert mqtt_register(emu, pk, "dev-0", ps)[0] == 4
    assert https_register(emu, pk, "dev-0", ps)[1] == {"code": 6289, "message": "device is already active"}
    assert connect_rc(emu, pk, "dev-0", first) == 0  # the secret itself keeps working
    emu.reset(pk, "dev-0")
    assert emu.device(pk, "dev-0")["activated"] is False
    second = register(emu, pk, "dev-0", ps)
    assert second != first
    assert connect_rc(emu, pk, "dev-0", first) == 4
    assert connect_rc(emu, pk, "dev-0", second) == 0


def test_before_activation_the_last_secret_wins(prod):
    emu, pk, ps = prod
    first = register(emu, pk, "dev-0", ps)
    second = register(emu, pk, "dev-0", ps)
    assert first != second
    assert connect_rc(emu, pk, "dev-0", first) == 4
    assert emu.device(pk, "dev-0")["activated"] is False
    assert connect_rc(emu, pk, "dev-0", second) == 0


@pytest.mark.parametrize("keepalive,code", [(29, 2), (30, 0), (1200, 0), (1201, 2)])
def test_keepalive_bounds(prod, keepalive, code):
    emu, pk, ps = prod
    ds = register(emu, pk, "dev-0", ps)
    assert connect_rc(emu, pk, "dev-0", ds, keepalive=keepalive) == code
    assert mqtt_register(emu, pk, "dev-1", ps, keepalive=keepalive)[0] == code


@pytest.mark.parametrize("second_timestamp", ["1", "2"])  # the same clientId, or another one
def test_second_login_kicks_the_first_off(prod, second_timestamp):
    emu, pk, ps = prod
    ds = register(emu, pk, "dev-0", ps)
    rc_a, a = mqtt_connect(emu, pk, "dev-0", ds, timestamp="1")
    try:
        assert rc_a == 0
        rc_b, b = mqtt_connect(emu, pk, "dev-0", ds, timestamp=second_timestamp)
        try:
            assert rc_b == 0
            assert a.disconnected.wait(10), "the first session was not kicked off"
            assert not b.disconnected.is_set()
            assert json.loads(post_property(b, pk, "dev-0")[1])["code"] == 200
        finally:
            b.close()
    finally:
        a.close()


def test_device_cannot_use_another_devices_topics(prod):
    emu, pk, ps = prod
    ds = register(emu, pk, "dev-0", ps)
    rc, dev = mqtt_connect(emu, pk, "dev-0", ds)
    try:
        assert rc == 0
        granted = []
        dev.client.on_subscribe = lambda c, u, m, codes, p: granted.extend(codes)
        dev.client.subscribe("/sys/%s/dev-1/thing/service/property/set" % pk, qos=1)
        dev.publish("/sys/%s/dev-0/thing/event/property/post" % pk, b"{}")  # own topic: still answered
        assert dev.message()[0].endswith("/dev-0/thing/event/property/post_reply")
        assert granted and all(code.is_failure for code in granted)
    finally:
        dev.close()


def test_property_post_that_is_not_json_gets_an_error_reply(prod):
    emu, pk, ps = prod
    ds = register(emu, pk, "dev-0", ps)
    rc, dev = mqtt_connect(emu, pk, "dev-0", ds)
    try:
        dev.publish("/sys/%s/dev-0/thing/event/property/post" % pk, b"not json")
        reply = json.loads(dev.message()[1])
    finally:
        dev.close()
    assert reply["code"] != 200 and reply["method"] == "thing.event.property.post"


# ---- HTTPS registration ----


def test_https_registration(prod):
    emu, pk, ps = prod
    status, body = https_register(emu, pk, "dev-0", ps)
    assert status == 200
    assert body["code"] == 200 and body["message"] == "success"
    assert list(body["data"]) == ["productKey", "deviceName", "deviceSecret"]
    ds = body["data"]["deviceSecret"]
    assert connect_rc(emu, pk, "dev-0", ds) == 0
    already = {"code": 6289, "message": "device is already active"}
    assert https_register(emu, pk, "dev-0", ps) == (200, already)
    assert https_register(emu, pk, "dev-1", ps + "x")[1]["code"] not in (200, 6289)
    assert https_register(emu, pk, "no-device", ps)[1]["code"] not in (200, 6289)
    assert https_register(emu, pk, "dev-1", ps, method="hmacmd5")[1]["code"] == 200
    assert https_register(emu, pk, "dev-2", ps, path="/other")[0] == 404


# ---- state, restarts, secrets ----


def test_registry_and_ca_survive_a_restart(emulator):
    emu = emulator(products={"a1Restart": "ps-restart"}, devices=["a1Restart/dev-0"], fresh_ca=True)
    ca_before = emu.ca_der.read_bytes()
    ds = register(emu, "a1Restart", "dev-0", "ps-restart")
    assert connect_rc(emu, "a1Restart", "dev-0", ds) == 0
    emu.restart()
    assert emu.ca_der.read_bytes() == ca_before
    assert emu.ca_pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert ssl.PEM_cert_to_DER_cert(emu.ca_pem.read_text()) == ca_before
    assert connect_rc(emu, "a1Restart", "dev-0", ds) == 0
    assert mqtt_register(emu, "a1Restart", "dev-0", "ps-restart")[0] == 4
    registry_path = emu.state_dir / "registry.json"
    assert stat.S_IMODE(os.stat(registry_path).st_mode) == 0o600


def test_no_secret_in_show_or_log(prod):
    emu, pk, ps = prod
    emu.cli("product", pk, "--regnwl", "on")
    ds = register(emu, pk, "dev-0", ps)
    _, _, reply = mqtt_register(emu, pk, "nwl-dev", ps, auth_type="regnwl")
    connect_rc(emu, pk, "dev-0", ds)
    connect_rc(emu, pk, "dev-0", ds[::-1])
    shown = emu.cli("show").stdout
    assert pk in shown
    log = emu.log()
    assert "dev-0" in log
    for secret in (ps, ds, reply["deviceToken"]):
        assert secret not in shown
        assert secret not in log


def test_registration_session_closed_after_linger(emulator):
    emu = emulator(products={"a1Linger": "ps-linger"}, devices=["a1Linger/dev-0"], linger=0.5)
    client_id, username, password = register_identity("a1Linger", "dev-0", "ps-linger")
    with raw_tls(emu) as sock:
        sock.sendall(connect_packet(client_id, username, password))
        assert read_packet(sock)[:2] == (0x20, b"\x00\x00")
        kind, body = read_packet(sock)
        assert kind == 0x30 and b"/ext/register" in body
        sock.settimeout(10)
        assert sock.recv(1) == b""  # the server closed it: no DISCONNECT was sent
    assert "without DISCONNECT" in emu.log()


@pytest.mark.parametrize(
    "tls_fault,needle",
    [
        ("expired", "expired"),
        ("wronghost", "mismatch"),
        ("unknownca", "unable to get local issuer"),
        ("plain", ""),
    ],
)
def test_tls_faults(emulator, tls_fault, needle):
    emu = emulator(tls_fault=tls_fault)
    for port in (emu.port, emu.https_port):
        with pytest.raises(ssl.SSLError) as info:
            with raw_tls(emu, port):
                pass
        assert needle in str(info.value)
        assert not isinstance(info.value, ssl.SSLEOFError)  # a TLS failure, not a bare EOF
    # The plain-TCP listener is not affected by TLS faults.
    with socket.create_connection((emu.host, emu.tcp_port), timeout=5):
        pass


def test_device_added_with_a_known_secret(prod):
    emu, pk, _ = prod
    emu.add_device(pk, "preset-1", secret="KnownSecretForTests0123456789abc")
    assert connect_rc(emu, pk, "preset-1", "KnownSecretForTests0123456789abc") == 0
    assert emu.device(pk, "preset-1")["activated"] is True
