# Dynamic registration over HTTPS (pre-registered devices). Stock firmware's
# `requests` sets CERT_NONE and reads bodies without a bound, so this speaks
# the one HTTP/1.1 POST itself over a verifying SSLContext.
import json

from aliyun_iot import IotError, dial, forget, tls
from aliyun_iot.link import Link
from aliyun_iot.neterr import classify

_MAX_RESPONSE = 2048
_PATH = "/auth/register/device"


def endpoint(cfg):
    return cfg["auth_host"] or "iot-auth.%s.aliyuncs.com" % cfg["region"], cfg["auth_port"] or 443


def _post(cfg, host, port, body):
    # TCP, the TLS handshake and the request within 3 x timeout (dial.opened), the response read through a
    # Link: every wait at most a second, the watchdog fed. The session's context when the boot built one
    # (all the roots, or the ca file: what for_host would load again).
    head = (
        "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: %d\r\nConnection: close\r\n\r\n" % (_PATH, host, len(body))
    )
    s = None
    try:
        s = dial.opened(cfg, host, port, cfg.get("ctx") or tls.for_host(cfg, host), head.encode() + body)
        return _read_response(Link(s.sock, cfg["timeout"] * 1000, _MAX_RESPONSE, s.raw))
    except Exception as e:
        err = classify(e, "HTTPS registration at %s:%d" % (host, port))
        if err is None:
            raise
        raise err
    finally:
        if s:
            s.close()


def _read_response(sock):
    # Headers byte by byte (a few hundred), then exactly Content-Length, so a
    # server that keeps the connection open does not run into the deadline.
    buf = b""
    while buf.find(b"\r\n\r\n") < 0:
        b = sock.read(1, True)
        if not b:
            return buf
        buf += b
        if len(buf) > _MAX_RESPONSE:
            raise IotError("HTTPS registration response headers larger than %d bytes" % _MAX_RESPONSE,
                           "bad_reply", True)
    size = None
    for line in buf.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            v = line[15:].strip()
            size = int(v) if v.isdigit() else -1
    if size is not None and not 0 <= size <= _MAX_RESPONSE:
        raise IotError("HTTPS registration response body length is invalid or over %d bytes" % _MAX_RESPONSE,
                       "bad_reply", True)
    end = buf.find(b"\r\n\r\n") + 4
    want = (_MAX_RESPONSE if size is None else size) - (len(buf) - end)
    rest = sock.read(want, True) if want > 0 else b""
    if size is not None and len(rest) < want:  # the end of the stream (close_notify or a bare FIN) too soon
        raise IotError("HTTPS registration response ended %d bytes short of its Content-Length"
                       % (want - len(rest)), "closed", True)
    if size is None and len(rest) >= want:
        raise IotError("HTTPS registration response larger than %d bytes" % _MAX_RESPONSE, "bad_reply", True)
    return buf + rest


def parse_response(data, pk, dn):
    """The credential from an HTTP response to the registration POST."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise IotError("HTTPS registration response is not HTTP", "bad_reply", True)
    head, body = data[:end], data[end + 4 :]
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        raise IotError("HTTPS registration response is not HTTP", "bad_reply", True)
    code = int(status[1]) if status[1].isdigit() else 0
    if code >= 500:
        raise IotError("HTTPS registration: server error %d" % code, "http%d" % code, True)
    if code != 200:
        raise IotError("HTTPS registration refused with HTTP %d" % code, "http%d" % code)
    try:
        d = json.loads(body)
    except ValueError:
        raise IotError("HTTPS registration response body is not JSON", "bad_reply", True)
    if not isinstance(d, dict):
        raise IotError("HTTPS registration response body is not a JSON object", "bad_reply", True)
    c = d.get("code")
    if c == 6289:
        raise IotError(
            "HTTPS registration refused: device already activated; reset it with ResetThing in the console",
            "activated",
        )
    if c != 200:
        msg = d.get("message")
        raise IotError(
            "HTTPS registration refused, code %s: %s" % (c, msg if isinstance(msg, str) else ""),
            "https%s" % c,
        )
    data = d.get("data")
    if not isinstance(data, dict):
        raise IotError("HTTPS registration response has no data object", "bad_reply", True)
    from aliyun_iot.reply import credential

    return credential(data, pk, dn, "register")


def _quote(s):
    out = []
    for c in s.encode():
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"-_.~":
            out.append(chr(c))
        else:
            out.append("%%%02X" % c)
    return "".join(out)


def _form(cfg, pk, dn):
    # The url-encoded form of POST /auth/register/device, in a frame of its own (see register._login).
    from aliyun_iot import creds
    from aliyun_iot.register import fresh_random

    rnd = fresh_random()
    method = cfg["sign_method"]
    sig = creds.sign(method, cfg["product_secret"], {"deviceName": dn, "productKey": pk, "random": rnd})
    fields = (("productKey", pk), ("deviceName", dn), ("random", rnd), ("sign", sig), ("signMethod", method))
    return "&".join(k + "=" + _quote(v) for k, v in fields).encode()


def register_once(cfg, dn):
    """One HTTPS registration attempt; returns the credential dict."""
    pk = cfg["product_key"]
    host, port = endpoint(cfg)
    body = _form(cfg, pk, dn)
    forget("creds")  # not in RAM during the TLS handshake
    return parse_response(_post(cfg, host, port, body), pk, dn)
