# umqtt.simple test double: a small MQTT 3.1.1 client with the public API of
# micropython-lib's umqtt.simple, written for the host tests (not copied).
# It runs unchanged on the MicroPython unix port and on CPython (with the
# CPython shims), and speaks real MQTT to a real broker.
#
# UMQTT_API picks the generation frozen into the ESP32 firmware under test; each
# generation's exact signatures are enforced (a keyword it lacks is a TypeError):
#   "1.3.4" (MicroPython 1.21-1.22): MQTTClient(..., ssl=False, ssl_params={}),
#           connect(clean_session=True); TLS via module-level
#           ssl.wrap_socket(sock, **ssl_params).
#   "1.4.0" (1.23-1.24): MQTTClient(..., ssl=None), ssl is an SSLContext;
#           connect(clean_session=True); TLS via
#           ssl.wrap_socket(sock, server_hostname=server) on that context.
#   "1.6"   (default, 1.25+): MQTTClient(..., ssl=None, ssl_params={}),
#           connect(clean_session=True, timeout=None); ssl=True -> the legacy
#           module-level call, any other true value -> the context's method.
# Upstream behaviour kept on purpose, because the firmware must survive it:
# - the socket is made inside connect() from the module-global `socket` (tests
#   may substitute it) and is left open on any failure: the caller closes
#   client.sock;
# - 1.6 connect() calls sock.settimeout(timeout) right after creating it, and
#   None means block forever;
# - the CONNACK is read with sock.read(4): a short read raises IndexError, a
#   non-CONNACK AssertionError, a refusal MQTTException(rc);
# - wait_msg() reads one byte and then calls sock.setblocking(True), which also
#   drops any timeout; check_msg() sets non-blocking first and returns None when
#   nothing is waiting; end of stream raises OSError(-1);
# - wait_msg() returns the type byte of a packet it does not handle without
#   reading the rest of it (subscribe/publish read SUBACK/PUBACK themselves).
import os
import socket
import struct

API_VERSIONS = ("1.3.4", "1.4.0", "1.6")


def _api():
    try:
        v = os.getenv("UMQTT_API")
    except AttributeError:  # a board's os has no getenv
        v = None
    if not v:
        return "1.6"
    if v not in API_VERSIONS:
        raise ImportError("UMQTT_API must be one of 1.3.4, 1.4.0, 1.6")
    return v


API = _api()


class MQTTException(Exception):
    pass


def _b(s):
    # str and bytes are both accepted where upstream takes them
    return s.encode() if isinstance(s, str) else bytes(s)


def _field(s):
    s = _b(s)
    return struct.pack("!H", len(s)) + s


def _remaining_length(n):
    out = bytearray()
    while True:
        d = n & 0x7F
        n >>= 7
        if n:
            out.append(d | 0x80)
        else:
            out.append(d)
            return out


class MQTTClient:
    def _setup(self, client_id, server, port, user, password, keepalive, ssl, ssl_params):
        if port == 0:
            port = 8883 if ssl else 1883
        self.client_id = client_id
        self.sock = None
        self.server = server
        self.port = port
        self.ssl = ssl
        self.ssl_params = ssl_params
        self.pid = 0
        self.cb = None
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False

    if API == "1.3.4":

        def __init__(
            self,
            client_id,
            server,
            port=0,
            user=None,
            password=None,
            keepalive=0,
            ssl=False,
            ssl_params={},  # noqa: B006 - upstream's signature
        ):
            self._setup(client_id, server, port, user, password, keepalive, ssl, ssl_params)

        def connect(self, clean_session=True):
            self._open(False, None)
            if self.ssl:
                self._legacy_wrap()
            return self._handshake(clean_session)

    elif API == "1.4.0":

        def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
            self._setup(client_id, server, port, user, password, keepalive, ssl, None)

        def connect(self, clean_session=True):
            self._open(False, None)
            if self.ssl:
                self.sock = self.ssl.wrap_socket(self.sock, server_hostname=self.server)
            return self._handshake(clean_session)

    else:

        def __init__(
            self,
            client_id,
            server,
            port=0,
            user=None,
            password=None,
            keepalive=0,
            ssl=None,
            ssl_params={},  # noqa: B006 - upstream's signature
        ):
            self._setup(client_id, server, port, user, password, keepalive, ssl, ssl_params)

        def connect(self, clean_session=True, timeout=None):
            self._open(True, timeout)
            if self.ssl is True:
                self._legacy_wrap()
            elif self.ssl:
                self.sock = self.ssl.wrap_socket(self.sock, server_hostname=self.server)
            return self._handshake(clean_session)

    def _open(self, set_timeout, timeout):
        self.sock = socket.socket()
        if set_timeout:
            self.sock.settimeout(timeout)
        addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        self.sock.connect(addr)

    def _legacy_wrap(self):
        import ssl

        self.sock = ssl.wrap_socket(self.sock, **self.ssl_params)

    def _handshake(self, clean_session):
        flags = 0x02 if clean_session else 0
        payload = _field(self.client_id)
        if self.lw_topic:
            flags |= 0x04 | (self.lw_qos & 0x3) << 3 | (0x20 if self.lw_retain else 0)
            payload += _field(self.lw_topic) + _field(self.lw_msg)
        if self.user:
            # upstream sends both flags whenever user is set
            flags |= 0xC0
            payload += _field(self.user) + _field(self.pswd)
        if not 0 <= self.keepalive < 65536:
            raise AssertionError("keepalive out of range")
        body = b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack("!H", self.keepalive) + payload
        head = bytearray(b"\x10") + _remaining_length(len(body))
        head.extend(b"\0\0\0")  # padding that write(buf, n) must not send
        self.sock.write(head, len(head) - 3)
        self.sock.write(body)
        resp = self.sock.read(4)
        if resp[0] != 0x20 or resp[1] != 0x02:
            raise AssertionError("not a CONNACK")
        if resp[3] != 0:
            raise MQTTException(resp[3])
        return resp[2] & 1

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        if not 0 <= qos <= 2 or not topic:
            raise AssertionError("bad last will")
        self.lw_topic = topic
        self.lw_msg = msg
        self.lw_qos = qos
        self.lw_retain = retain

    def disconnect(self):
        self.sock.write(b"\xe0\0")
        self.sock.close()

    def ping(self):
        self.sock.write(b"\xc0\0")

    def publish(self, topic, msg, retain=False, qos=0):
        if qos == 2:
            raise AssertionError("qos 2 is not supported")
        topic = _b(topic)
        msg = _b(msg)
        size = 2 + len(topic) + len(msg) + (2 if qos else 0)
        if size >= 2097152:
            raise AssertionError("message too long")
        head = bytearray((0x30 | qos << 1 | (1 if retain else 0),)) + _remaining_length(size)
        self.sock.write(head)
        self.sock.write(_field(topic))
        if qos:
            self.pid += 1
            pid = self.pid
            self.sock.write(struct.pack("!H", pid))
        self.sock.write(msg)
        if qos == 1:
            while True:
                op = self.wait_msg()
                if op == 0x40:
                    if self.sock.read(1) != b"\x02":
                        raise AssertionError("bad PUBACK")
                    got = self.sock.read(2)
                    if got[0] << 8 | got[1] == pid:
                        return

    def subscribe(self, topic, qos=0):
        if self.cb is None:
            raise AssertionError("Subscribe callback is not set")
        topic = _b(topic)
        self.pid += 1
        pid = self.pid
        body = struct.pack("!H", pid) + _field(topic) + bytes((qos,))
        self.sock.write(bytearray(b"\x82") + _remaining_length(len(body)) + body)
        while True:
            op = self.wait_msg()
            if op == 0x90:
                resp = self.sock.read(4)
                if resp[1] << 8 | resp[2] != pid:
                    raise AssertionError("SUBACK for another packet id")
                if resp[3] == 0x80:
                    raise MQTTException(resp[3])
                return

    def _read_len(self):
        n = 0
        shift = 0
        while True:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def wait_msg(self):
        res = self.sock.read(1)
        self.sock.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            if self.sock.read(1)[0] != 0:
                raise AssertionError("bad PINGRESP")
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op
        size = self._read_len()
        tlen = self.sock.read(2)
        tlen = tlen[0] << 8 | tlen[1]
        topic = self.sock.read(tlen)
        size -= tlen + 2
        pid = 0
        if op & 6:
            p = self.sock.read(2)
            pid = p[0] << 8 | p[1]
            size -= 2
        msg = self.sock.read(size)
        self.cb(topic, msg)
        if op & 6 == 2:
            self.sock.write(b"\x40\x02" + struct.pack("!H", pid))
        elif op & 6 == 4:
            raise AssertionError("qos 2 is not supported")
        return op

    def check_msg(self):
        self.sock.setblocking(False)
        return self.wait_msg()
