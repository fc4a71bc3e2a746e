"""TLS failures in the shapes the board raises them, fed to the package on both runtimes.

From MicroPython's source (extmod/modtls_mbedtls.c and py/stream.c at v1.23.0..v1.28.0) and mbedTLS's
(library/ssl_msg.c): an mbedTLS allocation failure is OSError(12) (SSL_ALLOC_FAILED -> MP_ENOMEM) or
OSError(16) (MPI_ALLOC_FAILED, -0x10, made positive); an error through a TLS read or write is the negated
errno on 1.23-1.27 (OSError(-116)), positive from 1.28; a FIN without close_notify is OSError(-0x7280) in the
handshake and the end of the stream after it (mbedtls_ssl_read returns 0 on MBEDTLS_ERR_SSL_CONN_EOF).
The servers here are raw hostile ones (a TLS server that cuts, stalls, or answers HTTP badly).
"""

import json
import socket
import ssl
import time

import pytest
import trustme

from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script
from host_tests.plugins.wire import tcp_server, trickled_handshake

BODY = b'{"data":{"productKey":"pk","deviceName":"dn","deviceSecret":"x"},"code":200}'


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("tls_shapes")
    der = d / "ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(ctx)
    return der, ctx


def _request(tls):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(1024)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < n:
        body += tls.recv(1024)
    return data


def _bare_fin(tls):
    # shutdown() on CPython's SSLSocket drops the TLS layer first: a TCP FIN without close_notify.
    time.sleep(0.1)
    tls.shutdown(socket.SHUT_RDWR)
    time.sleep(0.5)
    tls.close()


def _handlers(ctx):
    def ragged(conn):
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except OSError:
            return  # the client gave up in the handshake (out of memory)
        tls.sendall(b"hello")
        _bare_fin(tls)

    def hscut(conn):
        with conn:
            conn.settimeout(5)
            conn.recv(4096)  # the ClientHello
            conn.shutdown(socket.SHUT_WR)  # a FIN where the ServerHello should be
            time.sleep(1)

    def nolen(conn):
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except OSError:
            return  # the client gave up in the handshake (out of memory)
        if _request(tls) is not None:
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY)
        _bare_fin(tls)

    def short(conn):
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except OSError:
            return
        if _request(tls) is not None:
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + BODY)
        _bare_fin(tls)

    def silent(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True):
                time.sleep(2)
        except OSError:
            return

    return {"ragged": ragged, "hscut": hscut, "nolen": nolen, "short": short, "silent": silent,
            "trickle": trickled_handshake}


def _run(runtime, pki, tmp_path, env=None, **params):
    der, ctx = pki
    handlers = _handlers(ctx)
    ports = {}
    servers = [tcp_server(h, "tls-shapes-" + name) for name, h in handlers.items()]
    try:
        for name, s in zip(handlers, servers, strict=True):
            ports[name] = s.__enter__()
        path = tmp_path / "params.json"
        path.write_text(json.dumps(dict(params, ca=str(der), ports=ports)))
        return assert_device_ok(run_script(runtime, device_script("tls_shapes.py"), args=[path], env=env))
    finally:
        for s in servers:
            s.__exit__(None, None, None)


def test_board_shapes_on_both_runtimes(runtime, pki, tmp_path):
    oks = _run(runtime, pki, tmp_path, parity=True)
    assert "https: short body is closed" in oks and "ragged close: then the end of the stream" in oks


def test_a_trickled_https_handshake_ends_at_its_deadline_with_the_watchdog_fed(runtime, pki, tmp_path):
    # HTTPS registration and the OTA download connect as an MQTT connection does (dial.opened): TCP, the
    # handshake and the request within 3 x timeout, every wait a second at most with the watchdog fed.
    oks = _run(runtime, pki, tmp_path, trickle=True)
    assert "https: a trickled handshake ends at its deadline" in oks
    assert "https: the watchdog was fed while it waited" in oks


def test_negative_errnos_of_1_23_to_1_27(pki, tmp_path):
    # The stand-in's switch for the older releases; the unix port here is a later one (positive).
    oks = _run("cpython", pki, tmp_path, env={"SHIM_TLS_ERRNO": "negative"}, negative=True)
    assert "TLS read timeout is timeout" in oks


@pytest.mark.parametrize("code", [12, 16])
def test_out_of_memory_in_the_handshake(pki, tmp_path, code):
    # The unix port's mbedTLS allocates with libc calloc (no MBEDTLS_PLATFORM_MEMORY hook in its build):
    # only the stand-in can fail a handshake for want of memory, in the board's shape.
    oks = _run("cpython", pki, tmp_path, env={"SHIM_TLS_NOMEM": "%d:2" % code}, nomem=code)
    assert "https out of memory: tls_nomem" in oks
