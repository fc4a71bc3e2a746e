# TLS that verifies: CERT_REQUIRED, the platform's roots (or the configured
# CA), and the server name checked by the caller's server_hostname.
import os
import ssl
from binascii import a2b_base64

from aliyun_iot import IotError

# A ca file is at most 16384 bytes. (No const(): the host tests import this module on CPython; each
# module-level name is a qstr, interned for good.)


def split_der(data):
    """Split concatenated DER certificates into a list (mbedTLS loads one per call)."""
    out = []
    i = 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise IotError("ca file is neither DER nor PEM certificates", "config")
        n = data[i + 1]
        if n < 0x80:
            head, size = 2, n
        else:
            k = n & 0x7F
            if not 1 <= k <= 3:
                raise IotError("ca file holds a malformed DER certificate", "config")
            head, size = 2 + k, int.from_bytes(data[i + 2 : i + 2 + k], "big")
        end = i + head + size
        if end > len(data):
            raise IotError("ca file holds a truncated DER certificate", "config")
        out.append(data[i:end])
        i = end
    if not out:
        raise IotError("ca file holds no certificate", "config")
    return out


def roots(cfg, host=""):
    """DER roots to trust: the configured ca file; else every built-in root, the one the host's endpoint
    chains to today first (umqtt.simple 1.3.4's ssl_params take one). All of them for every host: an
    endpoint's chain can move to a newer root (R1 expires 2028-01-28), and an OTA download host is not an
    MQTT endpoint."""
    path = cfg["ca"]
    if not path:
        from aliyun_iot import forget
        from aliyun_iot import roots as r

        rs = list(r.ALL)  # one name here: a name in this module is interned on every boot
        if ".iot-as-mqtt." in host:
            rs[0], rs[1] = rs[1], rs[0]  # old public endpoints chain to GlobalSign R1
        forget("roots")  # the roots stay in RAM only while a context is built
        return rs
    try:
        size = os.stat(path)[6]
    except OSError:
        raise IotError("ca file %s not found on the board" % path, "config")
    if size > 16384:
        raise IotError("ca file %s is larger than 16384 bytes" % path, "config")
    with open(path, "rb") as f:
        data = f.read(size)  # read(n) allocates n up front: ask for what is there
    if not data.startswith(b"-----BEGIN"):
        return split_der(data)
    out = []  # PEM: each certificate's base64 decoded
    for block in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        body = block.split(b"-----END CERTIFICATE-----")[0]
        out.append(a2b_base64(b"".join(body.split())))
    if not out:
        raise IotError("ca file holds no PEM certificate", "config")
    return out


def for_host(cfg, host):
    """An SSLContext that requires a certificate for host chained to the roots for it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    for der in roots(cfg, host):
        ctx.load_verify_locations(cadata=der)
    return ctx
