# Checks the umqtt.simple test double against a real broker (plain and TLS) and
# a raw CONNACK server, for the generation chosen by UMQTT_API.
# argv[1]: JSON file {host, tcp_port, tls_port, raw_port, ca, wrong_ca, topic, api}
import ssl
import time

import devkit
from umqtt import simple
from umqtt.simple import MQTTClient, MQTTException

P = devkit.load_json(devkit.arg(1))
API = P["api"]
HOST = P["host"]
NEW = API not in ("1.3.4", "1.4.0")  # 1.6.0 and later: connect(timeout=), ssl_params


def read(path):
    with open(path, "rb") as f:
        return f.read()


CA = read(P["ca"])
WRONG_CA = read(P["wrong_ca"])


def cid(name):
    return "%s-%s-%s" % (name, API, devkit.runtime())


def pump(c, got, want, ms=5000):
    t0 = time.ticks_ms()
    while len(got) < want and time.ticks_diff(time.ticks_ms(), t0) < ms:
        c.check_msg()
        time.sleep_ms(5)


def context(ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca)
    return ctx


def legacy_params(ca):
    return {"cert_reqs": ssl.CERT_REQUIRED, "cadata": ca, "server_hostname": "localhost"}


def close(c):
    if c.sock is not None:
        c.sock.close()


# ---------------------------------------------------------------- generation and signatures
devkit.equal("api", simple.API, API)
devkit.equal("port default plain", MQTTClient("c", HOST).port, 1883)
if API == "1.3.4":
    devkit.equal("port default tls", MQTTClient("c", HOST, ssl=True).port, 8883)
    MQTTClient("c", HOST, ssl=True, ssl_params={"server_hostname": HOST})
    devkit.ok("init takes ssl_params")
    devkit.raises("connect has no timeout", TypeError, MQTTClient("c", HOST).connect, timeout=1)
elif API == "1.4.0":
    devkit.equal("port default tls", MQTTClient("c", HOST, ssl=context(CA)).port, 8883)
    devkit.raises("init has no ssl_params", TypeError, MQTTClient, "c", HOST, ssl_params={})
    devkit.raises("connect has no timeout", TypeError, MQTTClient("c", HOST).connect, timeout=1)
else:
    devkit.equal("port default tls", MQTTClient("c", HOST, ssl=context(CA)).port, 8883)
    MQTTClient("c", HOST, ssl=True, ssl_params={"server_hostname": HOST})
    devkit.ok("init takes ssl_params")
devkit.raises("subscribe needs a callback", AssertionError, MQTTClient("c", HOST).subscribe, "t")


# ---------------------------------------------------------------- socket made in connect()
class _RecSocket:
    def __init__(self, log):
        self.log = log

    def settimeout(self, t):
        self.log.append("settimeout %s" % t)

    def connect(self, addr):
        self.log.append("connect %s:%s" % addr)
        raise OSError(111)

    def close(self):
        self.log.append("close")


class _RecModule:
    def __init__(self):
        self.log = []

    def socket(self, *args):
        self.log.append("socket")
        return _RecSocket(self.log)

    def getaddrinfo(self, host, port):
        self.log.append("getaddrinfo")
        return [(2, 1, 6, "", (host, port))]


rec = _RecModule()
real_socket = simple.socket
simple.socket = rec
try:
    c = MQTTClient("c", "h.example", 1234)
    if NEW:
        devkit.raises("connect error propagates", OSError, c.connect, timeout=3)
        want = ["socket", "settimeout 3", "getaddrinfo", "connect h.example:1234"]
    else:
        devkit.raises("connect error propagates", OSError, c.connect)
        want = ["socket", "getaddrinfo", "connect h.example:1234"]
    devkit.equal("socket calls", rec.log, want)
    devkit.check("failed socket left to caller", isinstance(c.sock, _RecSocket), repr(c.sock))
finally:
    simple.socket = real_socket

# ---------------------------------------------------------------- real broker, plain TCP
got = []
c = MQTTClient(cid("rt"), HOST, P["tcp_port"], keepalive=60)
c.set_callback(lambda t, m: got.append((t, m)))
if NEW:
    devkit.equal("connect", c.connect(timeout=5), 0)
else:
    devkit.equal("connect", c.connect(), 0)
topic = P["topic"] + "/" + cid("rt")
c.subscribe(topic, qos=1)
devkit.ok("subscribe")
c.publish(topic, b"zero")
c.publish(topic, "one", qos=1)
devkit.ok("publish qos1 acked")
pump(c, got, 2)
devkit.equal("round trip", sorted(got), [(topic.encode(), b"one"), (topic.encode(), b"zero")])
devkit.equal("check_msg idle", c.check_msg(), None)
if API in ("1.7.0", "1.8.0"):
    c.unsubscribe(topic)
    c.publish(topic, b"gone", qos=1)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 300:
        c.check_msg()
        time.sleep_ms(5)
    devkit.equal("unsubscribe", len(got), 2)
else:
    devkit.check("no unsubscribe", not hasattr(c, "unsubscribe"), API)
c.ping()
t0 = time.ticks_ms()
r = 1
while r is not None and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    r = c.wait_msg()  # PINGRESP -> None
devkit.equal("pingresp", r, None)
c.disconnect()
devkit.ok("disconnect")

# ---------------------------------------------------------------- real broker, TLS
tls_port = P["tls_port"]
if API == "1.3.4":
    c = MQTTClient(cid("tls"), "localhost", tls_port, ssl=True, ssl_params=legacy_params(CA))
    devkit.equal("tls legacy connect", c.connect(), 0)
    c.disconnect()
    c = MQTTClient(cid("tlsbad"), "localhost", tls_port, ssl=True, ssl_params=legacy_params(WRONG_CA))
    devkit.raises("tls legacy wrong ca", ValueError, c.connect)
    close(c)
elif API == "1.4.0":
    c = MQTTClient(cid("tls"), "localhost", tls_port, ssl=context(CA))
    devkit.equal("tls context connect", c.connect(), 0)
    c.disconnect()
    c = MQTTClient(cid("tlstrue"), "localhost", tls_port, ssl=True)
    devkit.raises("tls ssl=True unsupported", AttributeError, c.connect)
    close(c)
    c = MQTTClient(cid("tlsbad"), "localhost", tls_port, ssl=context(WRONG_CA))
    devkit.raises("tls context wrong ca", ValueError, c.connect)
    close(c)
else:
    c = MQTTClient(cid("tls"), "localhost", tls_port, ssl=context(CA))
    devkit.equal("tls context connect", c.connect(timeout=5), 0)
    c.disconnect()
    c = MQTTClient(cid("tlsl"), "localhost", tls_port, ssl=True, ssl_params=legacy_params(CA))
    devkit.equal("tls legacy connect", c.connect(timeout=5), 0)
    c.disconnect()
    c = MQTTClient(cid("tlsbad"), "localhost", tls_port, ssl=context(WRONG_CA))
    devkit.raises("tls context wrong ca", ValueError, c.connect, timeout=5)
    close(c)


# ---------------------------------------------------------------- raw CONNACK server
def raw(name):
    return MQTTClient(name, HOST, P["raw_port"], user="u", password="p")


for rc in (2, 4):
    c = raw("rc%d" % rc)
    e = devkit.raises("refused rc%d" % rc, MQTTException, c.connect)
    if e is not None:
        devkit.equal("refused rc%d code" % rc, e.args[0], rc)
    close(c)

c = raw("short")
devkit.raises("short connack", IndexError, c.connect)
close(c)

c = raw("eof")
c.set_callback(lambda t, m: None)
devkit.equal("eof connect", c.connect(), 0)
e = devkit.raises("end of stream", OSError, c.wait_msg)
if e is not None:
    devkit.equal("end of stream code", e.args[0], -1)
close(c)

c = raw("quiet")
devkit.equal("quiet connect", c.connect(), 0)
devkit.equal("check_msg nothing waiting", c.check_msg(), None)
close(c)


# ---------------------------------------------------------------- lengths: len() of the object given
class _Wire:
    """Records what the client writes (a str as its UTF-8, as py/stream.c does) and answers reads."""

    def __init__(self, answer=b""):
        self.out = bytearray()
        self.answer = answer
        self.closed = False

    def write(self, buf, n=None):
        b = buf.encode() if isinstance(buf, str) else bytes(buf)
        if n is not None:
            b = b[:n]
        self.out.extend(b)
        return len(b)

    def read(self, n):
        a = self.answer[:n]
        self.answer = self.answer[n:]
        return a

    def setblocking(self, flag):
        pass

    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def close(self):
        self.closed = True


class _WireModule:
    def __init__(self):
        self.made = []

    def socket(self, *args):
        self.made.append(_Wire(b"\x20\x02\x00\x00"))
        return self.made[-1]

    def getaddrinfo(self, host, port):
        return [(2, 1, 6, "", (host, port))]


TOPIC = "t/\u6e29"  # 3 characters, 5 bytes in UTF-8
TEXT = '{"name": "\u6e29\u5ea6\u4f20\u611f\u5668"}'  # {"name": "温度传感器"}: 17 characters, 27 bytes
c = MQTTClient("c", HOST)
c.sock = _Wire()
c.publish(TOPIC, TEXT)
out = c.sock.out
devkit.equal("publish str counted in characters", out[1], 2 + len(TOPIC) + len(TEXT))
devkit.equal("publish str written as UTF-8", len(out) - 2, 2 + len(TOPIC.encode()) + len(TEXT.encode()))
devkit.equal("topic length in characters", out[2:4], b"\x00\x03")
c.sock = _Wire()
c.publish(TOPIC.encode(), TEXT.encode())
out = c.sock.out
devkit.equal("publish bytes consistent", out[1], len(out) - 2)

wm = _WireModule()
simple.socket = wm
try:
    c = MQTTClient("\u8bbe\u5907", HOST, user="u", password="p")  # client id "设备": 2 characters, 6 bytes
    old = _Wire()
    c.sock = old
    devkit.equal("connect via wire", c.connect(), 0)
    out = wm.made[-1].out
    devkit.check("client id length in characters", b"\x00\x02\xe8\xae\xbe" in out, repr(bytes(out)))
    devkit.equal("connect length in characters", out[1], 10 + 2 + 2 + 2 + 1 + 2 + 1)
    devkit.equal("old socket closed on connect", old.closed, API == "1.8.0")
finally:
    simple.socket = real_socket

# packet ids are not wrapped: past 65535 the id on the wire (low 16 bits) never matches
c = MQTTClient("c", HOST)
c.pid = 65535
c.sock = _Wire(b"\x40\x02\x00\x00")  # the PUBACK for the id actually sent (0)
e = devkit.raises("qos1 past 65535 never acked", OSError, c.publish, b"t", b"m", qos=1)
if e is not None:
    devkit.equal("qos1 past 65535 ran into end of stream", e.args[0], -1)
