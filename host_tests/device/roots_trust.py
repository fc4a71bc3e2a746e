# The built-in roots in an SSLContext, and what a handshake makes of them, on both runtimes.
# argv: <params.json>: rsa / p384 {port, ca (DER path of the test CA the server's chain is under)}
import socket
import ssl

import devkit

from aliyun_iot import roots, tls
from aliyun_iot.neterr import classify

P = devkit.load_json(devkit.arg(1))
HOST = "localhost"
NAMES = ("ALIYUN_IOT", "GLOBALSIGN_R1", "GLOBALSIGN_R6", "GLOBALSIGN_R46", "GLOBALSIGN_E46")


def der(path):
    with open(path, "rb") as f:
        return f.read()


for name in NAMES:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=getattr(roots, name))
        devkit.ok("loads " + name)
    except (ValueError, OSError) as e:
        devkit.fail("loads " + name, repr(e))

cfg = {"ca": ""}
for host in ("pk.iot-as-mqtt.cn-shanghai.aliyuncs.com", "iot-06z00.mqtt.iothub.aliyuncs.com",
             "iot-auth.cn-shanghai.aliyuncs.com", "bucket.oss-cn-shanghai.aliyuncs.com", "127.0.0.1"):
    rs = tls.roots(cfg, host)
    devkit.equal("every root for " + host, sorted(rs), sorted(getattr(roots, n) for n in NAMES))
first = tls.roots(cfg, "pk.iot-as-mqtt.cn-shanghai.aliyuncs.com")[0]
devkit.equal("R1 first for an old public endpoint", first, roots.GLOBALSIGN_R1)


def handshake(name, ctx):
    """None when the chain verified, else the package's error code."""
    raw = socket.socket()
    raw.settimeout(5)
    try:
        raw.connect(socket.getaddrinfo("127.0.0.1", P[name]["port"])[0][-1])
        s = ctx.wrap_socket(raw, server_hostname=HOST)
        s.close()
        return None
    except Exception as e:  # noqa: BLE001 - the package's error for it is the result
        raw.close()
        err = classify(e, "handshake")
        return err.code if err is not None else repr(e)


def context(*extra_first, extra_last=()):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    for d in extra_first:
        ctx.load_verify_locations(cadata=d)
    for d in tls.roots(cfg, HOST):
        ctx.load_verify_locations(cadata=d)
    for d in extra_last:
        ctx.load_verify_locations(cadata=d)
    return ctx


for name in ("rsa", "p384"):
    ca = der(P[name]["ca"])
    devkit.equal(name + ": the built-in roots alone refuse a chain under another CA",
                 handshake(name, tls.for_host(cfg, HOST)), "tls_verify")
    got = handshake(name, context(extra_last=[ca]))
    devkit.equal(name + ": its CA loaded after the five roots verifies", got, None)
    # A second load_verify_locations adds to the roots (mbedtls_x509_crt_parse appends to the context's
    # chain, extmod/modtls_mbedtls.c): the CA loaded first is still trusted after five more.
    devkit.equal(name + ": its CA loaded before the five roots verifies (a load adds)",
                 handshake(name, context(ca)), None)

devkit.equal("p384 chain with only the RSA test CA and the roots: tls_verify",
             handshake("p384", context(der(P["rsa"]["ca"]))), "tls_verify")
devkit.equal("rsa chain with only the P-384 test CA and the roots: tls_verify",
             handshake("rsa", context(der(P["p384"]["ca"]))), "tls_verify")
