# The two runtimes must agree: what the harness gives a script (argv, env, cwd,
# module path) and the MicroPython behaviour the CPython shims imitate (ticks,
# socket streams and timeouts, the ssl/tls API and its errors). Every check
# here expects the same result on CPython and on the MicroPython unix port.
# argv: <params.json> <extra arg>; env HARNESS_PROBE=42
import errno
import os
import socket
import ssl
import sys
import time

import devkit

P = devkit.load_json(devkit.arg(1))

# ---------------------------------------------------------------- harness
devkit.equal("argv", sys.argv[2:], ["two words"])
devkit.equal("getenv", os.getenv("HARNESS_PROBE"), "42")
devkit.equal("cwd is the flash", os.getcwd().rstrip("/").split("/")[-1], "flash")
import machine  # noqa: E402 - the shim, also where the unix port has a built-in machine

devkit.check("machine is the shim", hasattr(machine, "_RESET_EXIT"), "built-in machine shadows the shim")
from umqtt import simple  # noqa: E402

devkit.check("umqtt is the double", hasattr(simple, "API"), "another umqtt.simple on the path")
import tls  # noqa: E402, F401 - MicroPython's name for the TLS module exists on both

devkit.ok("import tls")
try:
    import paho  # noqa: F401 - a host package: a board cannot import it, neither may the firmware here

    devkit.fail("no host packages", "paho imported")
except ImportError:
    devkit.ok("no host packages")

# ---------------------------------------------------------------- time
t = time.ticks_ms()
devkit.equal("ticks_add/diff", time.ticks_diff(time.ticks_add(t, 100), t), 100)
devkit.equal("ticks_diff negative", time.ticks_diff(t, time.ticks_add(t, 100)), -100)
t0 = time.ticks_us()
time.sleep_ms(20)
devkit.check("sleep_ms", time.ticks_diff(time.ticks_us(), t0) >= 19000, "slept too short")


# ---------------------------------------------------------------- socket streams
# The test's stream server sends b"abcxyz\nrest", waits for b"go" (and nothing more), sends b"end", closes.
def stream_connect():
    c = socket.socket()
    c.connect(socket.getaddrinfo("127.0.0.1", P["stream_port"])[0][-1])
    return c


c = stream_connect()
devkit.equal("read(n) waits for n", c.read(4), b"abcx")
devkit.equal("readline", c.readline(), b"yz\n")
buf = bytearray(4)
devkit.equal("readinto", c.readinto(buf), 4)
devkit.equal("readinto data", bytes(buf), b"rest")
c.setblocking(False)
devkit.equal("non-blocking read, nothing there", c.read(1), None)
c.settimeout(0.2)
e = devkit.raises("read timeout", OSError, c.read, 1)
if e is not None:
    devkit.equal("read timeout errno", e.args[0], errno.ETIMEDOUT)
# Back to blocking with no deadline. Not setblocking(True): on the unix port it clears O_NONBLOCK but keeps
# the 0.2 s SO_RCVTIMEO, so a loaded machine made the next read time out (a board's lwIP resets both).
c.settimeout(None)
devkit.equal("write(buf, n)", c.write(b"goXXXX", 2), 2)
devkit.equal("read(n) stops at EOF", c.read(10), b"end")
devkit.equal("read at EOF", c.read(1), b"")
c.close()

# ---------------------------------------------------------------- ssl / tls
devkit.check("no ssl.SSLError", not hasattr(ssl, "SSLError"), "CPython-only name present")
devkit.check("ssl.wrap_socket", hasattr(ssl, "wrap_socket"), "missing")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
devkit.equal("client context starts with CERT_NONE", ctx.verify_mode, ssl.CERT_NONE)


def read(path):
    with open(path, "rb") as f:
        return f.read()


CA = read(P["ca"])
WRONG = read(P["wrong_ca"])


def tls_connect(cadata_list, hostname="localhost"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    for der in cadata_list:
        ctx.load_verify_locations(cadata=der)
    s = socket.socket()
    s.settimeout(5)
    s.connect(socket.getaddrinfo("127.0.0.1", P["tls_port"])[0][-1])
    try:
        t = ctx.wrap_socket(s, server_hostname=hostname)
    except Exception:
        s.close()
        raise
    t.write(b"\xc0\x00")  # an MQTT PINGREQ before CONNECT: the broker hangs up
    t.close()


tls_connect([CA])
devkit.ok("tls verified")
tls_connect([WRONG, CA])
devkit.ok("tls roots loaded one per call")
devkit.raises("tls wrong root", ValueError, tls_connect, [WRONG])
devkit.raises("tls wrong hostname", ValueError, tls_connect, [CA], "example.com")
# mbedTLS reads one certificate from DER input: the second root of a concatenation is ignored
devkit.raises("tls concatenated DER trusts the first only", ValueError, tls_connect, [WRONG + CA])


def tls_to_stream_server():
    s = stream_connect()
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(s, server_hostname="localhost")
    finally:
        s.close()


e = devkit.raises("tls to a non-TLS server", OSError, tls_to_stream_server)
if e is not None:
    code = e.args[0]
    devkit.check("tls error is an mbedTLS code", isinstance(code, int) and code < -0x1000, repr(e.args))
