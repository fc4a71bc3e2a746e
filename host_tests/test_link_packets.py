"""MQTT packets as the session's link reads them (aliyun_iot.link.Link.recv), on both runtimes.

A raw TCP server stands on the other side and answers each connection with the bytes of one case: a
PUBLISH at QoS 0 and at QoS 1 (which the link acknowledges with the packet id it read), an empty payload,
a SUBACK, a PINGRESP, a PUBLISH arriving in pieces, and the bad ones: a packet over the link's bound, a
topic longer than its packet, a remaining length over four bytes, and streams that end inside a packet.
The checks run in host_tests/device/link_packets.py; this side also checks what the link wrote back.
"""

import time

import pytest

from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script
from host_tests.plugins.wire import tcp_server


def _publish(topic, payload, qos=0, pid=b""):
    body = len(topic).to_bytes(2, "big") + topic + pid + payload
    assert len(body) < 128
    return bytes((0x30 | qos << 1, len(body))) + body


# case -> the byte strings the server sends, with a pause between them; then it waits for the device to
# close (what the device wrote meanwhile is kept per case).
CASES = {
    "qos0": [_publish(b"a/b", b"hi")],
    "qos1": [_publish(b"t", b"p1", 1, b"\x12\x34")],
    "empty": [_publish(b"top", b"")],
    "suback": [b"\x90\x03\x00\x01\x00"],
    "pingresp": [b"\xd0\x00"],
    # 2 + 3 + 300 = 305 bytes: a two-byte remaining length, sent in three writes 50 ms apart
    "pieces": [b"\x30\xb1\x02\x00\x03a/", b"b" + b"x" * 100, b"x" * 200],
    # remaining length 5000 (over the link's 4096), and nothing after it: refused before any read
    "over": [b"\x30\x88\x27"],
    "badtopic": [b"\x30\x04\x00\x10ab"],
    "varint": [b"\x30\xff\xff\xff\xff\x01"],
    "cut": [b"\x30\x0a\x00\x03a/b"],
    "cutlen": [b"\x30\x80"],
}
CLOSES = ("cut", "cutlen")  # the server closes after sending these


def _serve_case(conn, wrote):
    # The first line names the case; its bytes go out; then what the device writes until it closes is kept.
    with conn:
        conn.settimeout(5)
        case = b""
        while not case.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                return
            case += chunk
        case = case.decode().strip()
        for i, part in enumerate(CASES[case]):
            if i:
                time.sleep(0.05)
            conn.sendall(part)
        if case in CLOSES:
            return
        got = b""
        try:
            while chunk := conn.recv(64):
                got += chunk
        except OSError:
            pass
        wrote[case] = got


@pytest.fixture
def raw_server():
    """(port, {case: bytes the device wrote}) of a server that answers each connection with one case."""
    wrote = {}
    with tcp_server(lambda conn: _serve_case(conn, wrote), "link-packets") as port:
        yield port, wrote


def test_link_reads_packets_and_refuses_bad_ones(runtime, raw_server):
    port, wrote = raw_server
    names = assert_device_ok(run_script(runtime, device_script("link_packets.py"), args=[port]))
    assert len(names) == 11, names
    # The QoS 1 PUBLISH was acknowledged with its own packet id; nothing else was answered.
    deadline = time.monotonic() + 2
    while not {"qos0", "qos1", "suback"} <= wrote.keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wrote["qos1"] == b"\x40\x02\x12\x34"
    assert wrote["qos0"] == b"" and wrote["suback"] == b""
