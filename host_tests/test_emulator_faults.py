"""The emulator's fault switches (`python -m tools.emulator fault ...`), seen from the device side."""

import json
import time

import pytest

from host_tests.plugins.emulator import PahoDevice, mqtt_connect, mqtt_register, register_identity
from host_tests.plugins.wire import (
    connect_packet,
    https_register,
    raw_tls,
    read_exact,
    read_header,
    read_packet,
)

CONNACK_OK = (0x20, b"\x00\x00")


def raw_register(emu, pk, dn, ps):
    """A TLS socket that has sent a registration CONNECT."""
    sock = raw_tls(emu)
    sock.sendall(connect_packet(*register_identity(pk, dn, ps)))
    return sock


def test_refuse_with_a_code_per_product_and_per_device(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--refuse", "3")
    assert mqtt_register(emu, pk, "dev-0", ps)[0] == 3
    emu.fault(pk + "/dev-1", "--refuse", "5")
    assert mqtt_register(emu, pk, "dev-1", ps)[0] == 5  # the device's entry overrides the product's
    emu.cli("fault", "clear", pk)
    assert mqtt_register(emu, pk, "dev-0", ps)[0] == 0
    assert mqtt_register(emu, pk, "dev-1", ps)[0] == 5
    emu.clear_faults()
    assert mqtt_register(emu, pk, "dev-1", ps)[0] == 0


def test_refuse_on_connect_only(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--on", "connect", "--refuse", "3")
    rc, _, reply = mqtt_register(emu, pk, "dev-0", ps)
    assert rc == 0
    rc, dev = mqtt_connect(emu, pk, "dev-0", reply["deviceSecret"])
    dev.close()
    assert rc == 3
    assert emu.device(pk, "dev-0")["activated"] is False


def test_times_expires_the_fault(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--refuse", "3", "--times", "2")
    assert [mqtt_register(emu, pk, "dev-0", ps)[0] for _ in range(3)] == [3, 3, 0]
    assert pk not in emu.registry()["faults"]


def test_quiet_after_connack(prod):
    emu, pk, ps = prod
    emu.fault(pk + "/dev-0", "--quiet")
    with raw_register(emu, pk, "dev-0", ps) as sock:
        assert read_packet(sock) == CONNACK_OK
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert emu.device(pk, "dev-0")["secret"] is None  # nothing was issued


def test_close_after_connack(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--close")
    dev = PahoDevice(emu, *register_identity(pk, "dev-0", ps))
    try:
        assert dev.connect() == 0
        assert dev.disconnected.wait(10)
        assert dev.messages.empty()
    finally:
        dev.close()


def test_close_after_connack_on_an_authenticated_session(prod):
    emu, pk, ps = prod
    ds = mqtt_register(emu, pk, "dev-0", ps)[2]["deviceSecret"]
    emu.fault(pk, "--on", "connect", "--close")
    rc, dev = mqtt_connect(emu, pk, "dev-0", ds)
    try:
        assert rc == 0
        assert dev.disconnected.wait(10)
    finally:
        dev.close()


def test_raw_payload_on_another_topic(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--payload", "not json {", "--topic", "/ext/elsewhere")
    dev = PahoDevice(emu, *register_identity(pk, "dev-0", ps))
    try:
        assert dev.connect() == 0
        assert dev.message() == ("/ext/elsewhere", b"not json {")
    finally:
        dev.close()
    assert emu.device(pk, "dev-0")["secret"] is None


def test_raw_payload_hex(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--payload-hex", "00ff7b")
    dev = PahoDevice(emu, *register_identity(pk, "dev-0", ps))
    try:
        assert dev.connect() == 0
        assert dev.message() == ("/ext/register", b"\x00\xff{")
    finally:
        dev.close()


def test_real_reply_on_an_unexpected_topic_still_issues_the_secret(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--topic", "/ext/unexpected")
    dev = PahoDevice(emu, *register_identity(pk, "dev-0", ps))
    try:
        assert dev.connect() == 0
        topic, payload = dev.message()
    finally:
        dev.close()
    assert topic == "/ext/unexpected"
    emu.clear_faults()
    rc, conn = mqtt_connect(emu, pk, "dev-0", json.loads(payload)["deviceSecret"])
    conn.close()
    assert rc == 0


def test_two_replies(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--double")
    with raw_register(emu, pk, "dev-0", ps) as sock:
        assert read_packet(sock) == CONNACK_OK
        first = read_packet(sock)
        second = read_packet(sock)
    assert first == second and first[0] == 0x30 and b'"deviceSecret"' in first[1]


def test_huge_announced_publish_length(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--huge")
    with raw_register(emu, pk, "dev-0", ps) as sock:
        assert read_packet(sock) == CONNACK_OK
        first, length = read_header(sock)
        assert (first, length) == (0x30, 268_435_455)
        assert read_exact(sock, 2 + len("/ext/register"))[2:] == b"/ext/register"


def test_delayed_reply(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--delay", "400")
    dev = PahoDevice(emu, *register_identity(pk, "dev-0", ps))
    try:
        assert dev.connect() == 0
        t0 = time.monotonic()
        topic, _ = dev.message()
        waited = time.monotonic() - t0
    finally:
        dev.close()
    assert topic == "/ext/register"
    assert waited >= 0.3  # a lower bound only: the reply was held back


def test_rate_limit_refuses_the_excess_with_3(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--rate", "1")
    codes = [mqtt_register(emu, pk, "dev-%d" % i, ps)[0] for i in range(3)]
    assert codes[0] == 0
    assert 3 in codes[1:]
    assert set(codes) <= {0, 3}


def test_reply_faults_on_property_posts(prod):
    emu, pk, ps = prod
    ds = mqtt_register(emu, pk, "dev-0", ps)[2]["deviceSecret"]
    emu.fault(pk, "--on", "connect", "--double")
    rc, dev = mqtt_connect(emu, pk, "dev-0", ds)
    try:
        assert rc == 0
        dev.publish("/sys/%s/dev-0/thing/event/property/post" % pk, b'{"id":"5"}')
        assert dev.message() == dev.message()
        emu.fault(pk, "--on", "connect", "--payload", '{"code":500}')
        dev.publish("/sys/%s/dev-0/thing/event/property/post" % pk, b'{"id":"6"}')
        assert dev.message() == ("/sys/%s/dev-0/thing/event/property/post_reply" % pk, b'{"code":500}')
    finally:
        dev.close()


def test_https_faults(prod):
    emu, pk, ps = prod
    emu.fault(pk, "--on", "https", "--refuse", "6100")
    assert https_register(emu, pk, "dev-0", ps)[1]["code"] == 6100
    assert mqtt_register(emu, pk, "dev-0", ps)[0] == 0  # MQTT registration untouched
    emu.fault(pk, "--on", "https", "--payload", '{"code":200,"data":{}}')
    assert https_register(emu, pk, "dev-1", ps) == (200, {"code": 200, "data": {}})


def test_bad_fault_specs_are_refused(prod):
    emu, pk, _ = prod
    for switches in ((), ("--on", "bogus", "--refuse", "3"), ("--rate", "0"), ("--quiet", "--close")):
        res = emu.cli("fault", "set", pk, *switches, check=False)
        assert res.returncode != 0 and res.stderr.strip()
