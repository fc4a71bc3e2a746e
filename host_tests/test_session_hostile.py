"""The session against a hostile platform, on both runtimes: a raw MQTT server of its own (just enough MQTT
3.1.1: CONNACK, SUBACK, PINGRESP, the property-post replies) that misbehaves per case, read from the
DeviceName of the login: sets nested 1,500 deep, a post reply nested so, trickled or with a 4-byte length,
a TLS handshake trickled, a server that accepts and closes, one that kicks the device off, refused SUBACKs of
the package's own topics, a stream of sets, QoS 2 and a QoS 1 resend, a post from inside a handler, a set
over 4 KB. The checks run in host_tests/device/session_hostile.py; this side checks what the device wrote.
"""

import json
import socket
import threading
import time

import pytest

from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script
from host_tests.plugins.wire import read_exact, read_header, tcp_server, trickled_handshake, varint

PK = "pkHostile1"


def publish(topic, payload, qos=0, pid=1, dup=False):
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (pid.to_bytes(2, "big") if qos else b"") + payload
    return bytes((0x30 | qos << 1 | (8 if dup else 0),)) + varint(len(body)) + body


def _nested(n):
    return b"[" * n + b"]" * n


def set_msg(dn, payload, **kw):
    return publish("/sys/%s/%s/thing/service/property/set" % (PK, dn), payload, **kw)


def reply_msg(dn, mid, code=200):
    body = json.dumps({"id": mid, "code": code, "data": {}, "message": "success"}).encode()
    return publish("/sys/%s/%s/thing/event/property/post_reply" % (PK, dn), body)


class Conn:
    """One device connection: reads its packets in a thread, answers as a broker would, per case."""

    def __init__(self, server, sock):
        self.server, self.sock = server, sock
        self.lock = threading.Lock()
        self.dn = None
        self.n = server.count()
        self.granted = set()

    def send(self, data, trickle=0.0):
        with self.lock:
            if trickle:
                for i in range(len(data)):
                    time.sleep(trickle)
                    self.sock.sendall(data[i : i + 1])
            else:
                self.sock.sendall(data)

    def hangup(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self):
        with self.sock:
            self.sock.settimeout(30)
            try:
                self._run()
            except (OSError, ConnectionError):
                pass

    def _run(self):
        first, length = read_header(self.sock)
        body = read_exact(self.sock, length)
        # CONNECT: protocol name (6), level, flags, keepalive (2), client id, username "dn&pk", password
        pos = 10
        fields = []
        while pos < len(body):
            n = int.from_bytes(body[pos : pos + 2], "big")
            fields.append(body[pos + 2 : pos + 2 + n].decode())
            pos += 2 + n
        self.dn = fields[1].split("&")[0]
        case = self.dn
        self.server.log.append((self.n, "connect", case, time.monotonic()))
        self.send(b"\x20\x02\x00\x00")
        if case == "close":
            return
        if case == "kick":
            threading.Timer(0.3, self.hangup).start()
        if case == "subrefuse" and self.server.connects(case) == 1:
            threading.Timer(2.5, self.hangup).start()
        while True:
            first, length = read_header(self.sock)
            body = read_exact(self.sock, length)
            self.packet(case, first, body)

    def packet(self, case, first, body):
        kind = first & 0xF0
        log = self.server.log
        if kind == 0x80:  # SUBSCRIBE: one topic
            tl = int.from_bytes(body[2:4], "big")
            topic = body[4 : 4 + tl].decode()
            refuse = case == "subrefuse" and self.server.connects(case) == 1
            self.send(b"\x90\x03" + body[:2] + (b"\x80" if refuse else b"\x00"))
            if not refuse:
                self.granted.add(topic)
            if topic.endswith("/property/set") and not refuse:
                self.on_set_subscribed(case)
        elif kind == 0xC0:
            self.send(b"\xd0\x00")
        elif kind == 0x40:
            log.append((self.n, "puback", body.hex()))
        elif kind == 0xE0:
            raise ConnectionError("DISCONNECT")
        elif kind == 0x30:
            tl = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + tl].decode()
            msg = json.loads(body[2 + tl :]) if body[2 + tl :].startswith(b"{") else None
            log.append((self.n, "publish", topic, msg))
            if topic.endswith("/property/post") and topic + "_reply" in self.granted:
                self.on_post(case, msg)

    def on_set_subscribed(self, case):
        dn = self.dn
        if case == "nestset":
            deep = b'{"id": ' + _nested(1500) + b', "params": {}}'
            for p in (deep, b'{"id": 1e999, "params": {"a": 1}}', b'{"id": "9", "params": [1]}',
                      b'{"id": "7", "params": {"a": 1}}'):
                self.send(set_msg(dn, p))
        elif case == "stream":
            threading.Thread(target=self.stream, daemon=True).start()
        elif case == "qos":
            self.send(set_msg(dn, b'{"id": "1", "params": {"q": 2}}', qos=2, pid=4))
            self.send(set_msg(dn, b'{"id": "2", "params": {"q": 1}}', qos=1, pid=5))
            self.send(set_msg(dn, b'{"id": "2", "params": {"q": 1}}', qos=1, pid=5, dup=True))
            self.send(set_msg(dn, b'{"id": "3", "params": {"q": 0}}'))
        elif case == "oversize":
            if self.server.connects(case) == 1:
                self.send(set_msg(dn, b'{"id": "1", "params": {"x": "' + b"x" * 5000 + b'"}}'))
            else:
                self.send(set_msg(dn, b'{"id": "2", "params": {"c": 3}}'))
        elif case == "subrefuse":
            self.send(set_msg(dn, b'{"id": "5", "params": {"b": 2}}'))

    def stream(self):
        # Sets without a pause for 8 s (each answered by the device); post replies go out between them.
        dn, i, t_end = self.dn, 0, time.monotonic() + 8
        try:
            while time.monotonic() < t_end:
                batch = b""
                for _ in range(20):
                    i += 1
                    batch += set_msg(dn, b'{"id": "%d", "params": {"i": %d}}' % (i, i))
                self.send(batch)
                time.sleep(0.001)
        except OSError:
            pass

    def on_post(self, case, msg):
        dn, mid = self.dn, msg["id"]
        if case == "nestreply":
            body = b'{"id": ' + _nested(1500) + b', "code": 200}'
            self.send(publish("/sys/%s/%s/thing/event/property/post_reply" % (PK, dn), body))
        elif case == "trickle":
            # Each piece the link reads apart (header, length, topic length, topic, payload) trickled over
            # 1.5 s: a deadline per read would let the whole packet take 7.5 s.
            r = reply_msg(dn, mid)
            tl = int.from_bytes(r[2:4], "big")
            for piece in (r[:1], r[1:2], r[2:4], r[4 : 4 + tl], r[4 + tl :]):
                self.send(piece, trickle=1.5 / len(piece))
        elif case == "len4":
            r = reply_msg(dn, mid)
            n = len(r) - 2  # a one-byte length: sent again in four bytes, one every 1.5 s
            self.send(r[:1])
            self.send(bytes((0x80 | n, 0x80, 0x80, 0x00)) + r[2:], trickle=1.5)
        elif case == "nested" and "outer" in msg["params"]:
            # A set first; the outer post's reply only after the inner post's.
            self.outer = mid
            self.send(set_msg(dn, b'{"id": "8", "params": {"s": 1}}'))
        elif case == "nested" and "inner" in msg["params"]:
            self.send(reply_msg(dn, mid))
            self.send(reply_msg(dn, self.outer))
        else:
            self.send(reply_msg(dn, mid))


class Server:
    def __init__(self):
        self.log = []
        self._n = 0
        self._lock = threading.Lock()

    def count(self):
        with self._lock:
            self._n += 1
            return self._n

    def connects(self, case):
        return sum(1 for e in self.log if e[1] == "connect" and e[2] == case)

    def handle(self, sock):
        Conn(self, sock).run()

    def replies(self):
        return [e[3] for e in self.log if e[1] == "publish" and e[2].endswith("/set_reply")]


@pytest.fixture
def hostile():
    srv = Server()
    with tcp_server(srv.handle, "hostile-mqtt") as port:
        yield srv, port


CASES = ["api", "nestset", "nestreply", "trickle", "len4", "close", "kick", "subrefuse", "stream", "qos",
         "nested", "oversize"]


@pytest.mark.parametrize("case", CASES)
def test_session_against_a_hostile_server(runtime, hostile, case):
    srv, port = hostile
    r = run_script(runtime, device_script("session_hostile.py"), args=[port, case], timeout=40)
    assert_device_ok(r)
    replies = srv.replies()
    if case == "nestset":  # the good set answered 200, params [1] answered 460; the other two not at all
        assert [(x["id"], x["code"]) for x in replies] == [("9", 460), ("7", 200)], replies
    elif case == "qos":  # the QoS 1 set and its resend acknowledged; no PUBREC; each set answered once
        assert [e[2] for e in srv.log if e[1] == "puback"] == ["0005", "0005"], srv.log
        assert sorted(x["id"] for x in replies) == ["2", "3"], replies
    elif case == "close":  # at most a dozen connections in the (scaled) minute, the gaps growing
        times = [e[3] for e in srv.log if e[1] == "connect"]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert 3 <= len(times) <= 12 and gaps[-1] > 3 * gaps[0], gaps
    elif case == "subrefuse":
        subs = [e for e in srv.log if e[1] == "connect"]
        assert len(subs) >= 2


def test_trickled_tls_handshake_ends_at_its_deadline(runtime, tmp_path):
    ca = tmp_path / "ca.der"
    ca.write_bytes(_a_der_certificate())
    with tcp_server(trickled_handshake, "trickle-tls") as port:
        r = run_script(runtime, device_script("session_hostile.py"), args=[port, "handshake", str(ca)],
                       timeout=40)
    assert_device_ok(r)


def _a_der_certificate():
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "hostile test CA")])
    now = datetime.datetime(2025, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)



