# TLS failures in the shapes a board raises them (extmod/modtls_mbedtls.c, py/stream.c, v1.23.0..v1.28.0)
# and what the package makes of them (aliyun_iot.neterr, aliyun_iot.https). Same checks on CPython (the
# ssl stand-in) and on the unix port (real mbedTLS). argv: <params.json>
# params: ca (DER path), ports {ragged, hscut, nolen, short, silent}, negative (1.23-1.27 shapes expected),
# nomem (12 or 16: the first two handshakes fail out of memory), parity (run the checks both runtimes share).
import errno
import socket

import devkit

from aliyun_iot import IotError, https, tls
from aliyun_iot.link import Link
from aliyun_iot.neterr import classify

P = devkit.load_json(devkit.arg(1))
CFG = {"ca": P["ca"], "timeout": 5}
HOST = "localhost"


def code(e, what="read"):
    err = classify(e, what)
    return err.code if err is not None else None


def connect(name):
    raw = socket.socket()
    raw.settimeout(5)
    raw.connect(socket.getaddrinfo("127.0.0.1", P["ports"][name])[0][-1])
    return raw


def tls_to(name):
    raw = connect(name)
    return tls.for_host(CFG, HOST).wrap_socket(raw, server_hostname=HOST), raw


def post(name):
    return https._post(CFG, HOST, P["ports"][name], b"productKey=pk")


if P.get("parity"):
    # ---- neterr: each shape a board raises, on 1.23-1.27 (negative) and 1.28 (positive)
    for c, want in (
        (116, "timeout"), (-116, "timeout"), (110, "timeout"), (-110, "timeout"), (11, "timeout"),
        (-11, "timeout"), (104, "network"), (-104, "network"), (-113, "network"), (113, "network"),
        (12, "tls_nomem"), (16, "tls_nomem"), (-16, "tls_nomem"), (-0x7F00, "tls_nomem"),
        (-0x7280, "tls_eof"), (-0x7780, "tls_protocol"), (-0x2700, "tls_handshake"),
    ):
        devkit.equal("neterr %d" % c, code(OSError(c)), want)
        devkit.equal("neterr %d with text" % c, code(OSError(c, "SSL - text")), want)
    devkit.equal("neterr a timed-out TLS write (1.23-1.27)", code(OSError(-116), "write"), "timeout")

    # ---- a FIN without close_notify after the handshake: the end of the stream, on both runtimes
    s, raw = tls_to("ragged")
    link = Link(s, 5000, 64, raw)
    got = bytes(link.read(64, True))
    devkit.equal("ragged close: Link.read(part) gives what came before it", got, b"hello")
    devkit.equal("ragged close: then the end of the stream", bytes(link.read(8, True)), b"")
    link.close()

    # ---- a FIN in the handshake: OSError(-0x7280), tls_eof
    raw = connect("hscut")
    ctx = tls.for_host(CFG, HOST)
    e = devkit.raises("FIN in the handshake raises", OSError, ctx.wrap_socket, raw, server_hostname=HOST)
    raw.close()
    if e is not None:
        devkit.equal("FIN in the handshake: MBEDTLS_ERR_SSL_CONN_EOF", e.args[0], -0x7280)
        devkit.equal("FIN in the handshake: tls_eof", code(e, "HTTPS registration at h:1"), "tls_eof")

    # ---- https: a response without Content-Length read to a bare FIN
    try:
        data = post("nolen")
        devkit.check("https: no Content-Length, bare FIN: the whole response", data.endswith(b'"code":200}'),
                     repr(data[-40:]))
    except IotError as e:
        devkit.fail("https: no Content-Length, bare FIN: the whole response", "%s %s" % (e.code, e))
    # ---- https: a body shorter than its Content-Length is a cut, not a reply
    e = devkit.raises("https: short body raises", IotError, post, "short")
    if e is not None:
        devkit.equal("https: short body is closed", e.code, "closed")

if P.get("nomem"):  # the stand-in only (see test_tls_shapes)
    raw = connect("ragged")
    ctx = tls.for_host(CFG, HOST)
    e = devkit.raises("out of memory in the handshake", OSError, ctx.wrap_socket, raw, server_hostname=HOST)
    raw.close()
    if e is not None:
        devkit.equal("out of memory shape", e.args, (P["nomem"],))
    e = devkit.raises("https out of memory", IotError, post, "nolen")
    if e is not None:
        devkit.equal("https out of memory: tls_nomem", e.code, "tls_nomem")
    data = post("nolen")  # the budget of failures is spent: the next handshake goes through
    devkit.check("after out of memory the next handshake works", data.endswith(b'"code":200}'),
                 repr(data[-40:]))
else:
    # ---- a read that times out through TLS: the errno's sign is the release's (1.23-1.27 negative)
    s, raw = tls_to("silent")
    (s if hasattr(s, "settimeout") else raw).settimeout(0.3)  # as Link does: the stand-in's raw is detached
    e = devkit.raises("TLS read timeout raises", OSError, s.read, 1)
    if e is not None:
        want = -errno.ETIMEDOUT if P.get("negative") else errno.ETIMEDOUT
        devkit.equal("TLS read timeout shape", e.args[0], want)
        devkit.equal("TLS read timeout is timeout", code(e), "timeout")
        e2 = devkit.raises("TLS keeps its first error", OSError, s.read, 1)
        if e2 is not None:
            devkit.equal("TLS keeps its first error: same shape", e2.args[0], e.args[0])
    s.close()

if P.get("trickle"):
    # ---- https: a trickled handshake ends at its deadline (3 x timeout), the watchdog fed meanwhile
    import time

    import machine

    import aliyun_iot

    aliyun_iot._w = machine.WDT(timeout=30000)
    t0 = time.ticks_ms()
    e = devkit.raises("https: a trickled handshake raises", IotError, https._post, dict(CFG, timeout=1), HOST,
                      P["ports"]["trickle"], b"productKey=pk")
    dt = time.ticks_diff(time.ticks_ms(), t0)
    if e is not None:
        devkit.equal("https: a trickled handshake is a timeout", e.code, "timeout")
    devkit.check("https: a trickled handshake ends at its deadline", 2500 <= dt < 6000, "%d ms" % dt)
    aliyun_iot.sleep_ms(0)
    devkit.check("https: the watchdog was fed while it waited", machine.WDT.max_gap_ms <= 1500,
                 "longest gap %d ms" % machine.WDT.max_gap_ms)
    aliyun_iot._w = None

