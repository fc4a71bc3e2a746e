"""A device's bytes on the wire, for emulator tests that check the bytes themselves (no MQTT library):

    raw_tls(emu, port=None)                      a verifying TLS socket to the emulator's MQTT port
    connect_packet(client_id, username, password, keepalive=60) -> bytes of an MQTT 3.1.1 CONNECT
    varint(n) -> bytes of an MQTT remaining length
    read_exact(sock, n), read_header(sock) -> (first byte, remaining length), read_packet(sock, limit)
    https_register(emu, pk, dn, ps, method=..., path=..., sign_value=None) -> (HTTP status, reply dict)
    tcp_server(handler, name)                    with: a raw TCP server for a device script; gives its port
    trickled_handshake(conn)                     a tcp_server handler: a TLS handshake trickled for ever
"""

import contextlib
import http.client
import json
import secrets
import socket
import threading
import time
import urllib.parse

from tools.emulator.sign import sign


def https_register(emu, pk, dn, ps, method="hmacsha256", path="/auth/register/device", sign_value=None):
    random = secrets.token_hex(6)
    form = {
        "productKey": pk,
        "deviceName": dn,
        "random": random,
        "signMethod": method,
        "sign": sign_value or sign(method, ps, {"deviceName": dn, "productKey": pk, "random": random}),
    }
    conn = http.client.HTTPSConnection(emu.host, emu.https_port, context=emu.client_context(), timeout=10)
    try:
        conn.request(
            "POST", path, urllib.parse.urlencode(form), {"Content-Type": "application/x-www-form-urlencoded"}
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def raw_tls(emu, port=None):
    sock = socket.create_connection((emu.host, port or emu.port), timeout=10)
    try:
        return emu.client_context().wrap_socket(sock, server_hostname=emu.host)
    except BaseException:
        sock.close()
        raise


def _string(text):
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def varint(n):
    """MQTT's variable-length integer (a remaining length)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id, username, password, keepalive=60):
    body = _string("MQTT") + bytes([4, 0xC2]) + keepalive.to_bytes(2, "big")
    body += _string(client_id) + _string(username) + _string(password)
    return b"\x10" + varint(len(body)) + body


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def read_header(sock):
    """(first byte, announced remaining length)."""
    first = read_exact(sock, 1)[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = read_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, length


def read_packet(sock, limit=65536):
    first, length = read_header(sock)
    if length > limit:
        raise ValueError("announced length %d" % length)
    return first, read_exact(sock, length)


@contextlib.contextmanager
def tcp_server(handler, name):
    """Serve each connection on 127.0.0.1:<ephemeral> with handler(conn) in a thread; gives the port."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def accept_loop():
        while True:
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, name=name, daemon=True).start()
    try:
        yield ls.getsockname()[1]
    finally:
        ls.close()


def trickled_handshake(conn):
    """A TLS record header where the ServerHello should be, then one byte every 0.3 s for 60 s: a socket
    timeout that restarts on every byte (the ESP32's, ports/esp32/modsocket.c) never ends the handshake."""
    with conn:
        try:
            conn.recv(4096)
            conn.sendall(b"\x16\x03\x03\x40\x00")
            for _ in range(200):
                time.sleep(0.3)
                conn.sendall(b"\x02")
        except OSError:
            pass

