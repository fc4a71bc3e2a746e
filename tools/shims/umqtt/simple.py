# umqtt.simple test double: an MQTT 3.1.1 client with the public API of
# micropython-lib's umqtt.simple, written for the host tests from upstream's
# source (micropython-lib, micropython/umqtt.simple/umqtt/simple.py), not copied.
# It runs unchanged on the MicroPython unix port and on CPython (with the
# CPython shims), and speaks real MQTT to a real broker.
#
# UMQTT_API picks the generation frozen into the ESP32 firmware under test
# (manifest.py version at the commit cited); each generation's exact signatures
# are enforced (a keyword it lacks is a TypeError):
#   "1.3.4" (803452a1; MicroPython 1.21-1.22): MQTTClient(..., ssl=False,
#           ssl_params={}), connect(clean_session=True); TLS via the module-level
#           ssl.wrap_socket(sock, **ssl_params).
#   "1.4.0" (35d41dbb; 1.23-1.24): MQTTClient(..., ssl=None), ssl is an
#           SSLContext; connect(clean_session=True); TLS via
#           ssl.wrap_socket(sock, server_hostname=server) on that context.
#   "1.6.0" (98d0a2b6; 1.25-1.26): MQTTClient(..., ssl=None, ssl_params={}),
#           connect(clean_session=True, timeout=None); ssl=True -> the legacy
#           module-level call, any other true value -> the context's method.
#           "1.6" is accepted as its old name.
#   "1.7.0" (0d838c3a; 1.27-1.28, the default): 1.6.0 plus unsubscribe().
#   "1.8.0" (5e49b1bd; later): connect() first closes a socket it still holds
#           (5ba4b3b3), SUBSCRIBE/UNSUBSCRIBE lengths as a variable byte integer.
# Upstream behaviour kept on purpose, because the firmware must survive it:
# - every length is len() of the object given, and the object itself is then
#   written: a str is counted in characters and written as its UTF-8 bytes
#   (py/stream.c takes a str's buffer), so a non-ASCII str corrupts the stream;
# - packet ids grow without bound; struct.pack_into writes their low 16 bits
#   (MicroPython's py/binary.c does not range-check) while the PUBACK/SUBACK
#   check compares the whole number;
# - the socket is made inside connect() from the module-global `socket` (tests
#   may substitute it) and is left open on any failure: the caller closes
#   client.sock;
# - 1.6.0+ connect() calls sock.settimeout(timeout) right after creating it, and
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

API_VERSIONS = ("1.3.4", "1.4.0", "1.6.0", "1.7.0", "1.8.0")


def _api():
    try:
        v = os.getenv("UMQTT_API")
    except AttributeError:  # a board's os has no getenv
        v = None
    if not v:
        return "1.7.0"
    if v == "1.6":  # its name before the double knew 1.7.0 and 1.8.0
        v = "1.6.0"
    if v not in API_VERSIONS:
        raise ImportError("UMQTT_API must be one of 1.3.4, 1.4.0, 1.6.0, 1.7.0, 1.8.0")
    return v


API = _api()


class MQTTException(Exception):
    pass


def _check(b):
    # upstream's bare `assert`: AssertionError() (frozen modules keep their asserts)
    if not b:
        raise AssertionError()


def _remaining_length(pkt, sz):
    # Remaining Length into pkt[1:] as a variable byte integer; returns the
    # index of its last byte (umqtt/simple.py@0d838c3a inline loop, @5e49b1bd
    # _encode_len).
    i = 1
    while sz > 0x7F:
        pkt[i] = (sz & 0x7F) | 0x80
        sz >>= 7
        i += 1
    pkt[i] = sz
    return i


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
            # umqtt/simple.py@803452a1 (1.3.4): ussl.wrap_socket(sock, **ssl_params)
            self._open(None)
            if self.ssl:
                self._legacy_wrap()
            return self._handshake(clean_session)

    elif API == "1.4.0":

        def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
            self._setup(client_id, server, port, user, password, keepalive, ssl, None)

        def connect(self, clean_session=True):
            # umqtt/simple.py@35d41dbb (1.4.0): ssl is a context; ssl=True has no wrap_socket
            self._open(None)
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
            # umqtt/simple.py@5ba4b3b3 (1.7.1, so 1.8.0): a socket still held is closed first
            if API == "1.8.0" and self.sock:
                self.sock.close()
            # umqtt/simple.py@98d0a2b6 (1.6.0): settimeout(timeout) on the new socket; ssl=True is
            # the legacy module-level call with ssl_params, another true value a context
            self._open(timeout, True)
            if self.ssl is True:
                self._legacy_wrap()
            elif self.ssl:
                self.sock = self.ssl.wrap_socket(self.sock, server_hostname=self.server)
            return self._handshake(clean_session)

    def _open(self, timeout, set_timeout=False):
        self.sock = socket.socket()
        if set_timeout:
            self.sock.settimeout(timeout)
        addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        self.sock.connect(addr)

    def _legacy_wrap(self):
        import ssl  # 1.3.4 imports ussl: the same module on MicroPython 1.21+

        self.sock = ssl.wrap_socket(self.sock, **self.ssl_params)

    def _field(self, s):
        # umqtt/simple.py (every version): the length is len(s) on the object given, then s
        # itself is written; a str's UTF-8 bytes outnumber its characters when non-ASCII.
        self.sock.write(struct.pack("!H", len(s)))
        self.sock.write(s)

    def _handshake(self, clean_session):
        # umqtt/simple.py@803452a1..5e49b1bd connect(): the fixed header and the first byte
        # of the protocol name's length go out together (write(premsg, i + 2)); the Remaining
        # Length counts 10 header bytes plus len() of each string.
        premsg = bytearray(b"\x10\0\0\0\0\0")
        msg = bytearray(b"\x04MQTT\x04\x02\0\0")
        sz = 10 + 2 + len(self.client_id)
        msg[6] = clean_session << 1
        if self.user:
            # upstream sends both flags and both strings whenever user is set
            sz += 2 + len(self.user) + 2 + len(self.pswd)
            msg[6] |= 0xC0
        if self.keepalive:
            _check(self.keepalive < 65536)
            msg[7] |= self.keepalive >> 8
            msg[8] |= self.keepalive & 0xFF
        if self.lw_topic:
            sz += 2 + len(self.lw_topic) + 2 + len(self.lw_msg)
            msg[6] |= 0x4 | (self.lw_qos & 0x1) << 3 | (self.lw_qos & 0x2) << 3
            msg[6] |= self.lw_retain << 5
        i = _remaining_length(premsg, sz)
        self.sock.write(premsg, i + 2)
        self.sock.write(msg)
        self._field(self.client_id)
        if self.lw_topic:
            self._field(self.lw_topic)
            self._field(self.lw_msg)
        if self.user:
            self._field(self.user)
            self._field(self.pswd)
        resp = self.sock.read(4)
        _check(resp[0] == 0x20 and resp[1] == 0x02)
        if resp[3] != 0:
            raise MQTTException(resp[3])
        return resp[2] & 1

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        _check(0 <= qos <= 2)
        _check(topic)
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
        # umqtt/simple.py (every version) publish(): Remaining Length = 2 + len(topic) + len(msg)
        # (+2 for a packet id) on the objects given, then topic and msg are written as they are.
        pkt = bytearray(b"\x30\0\0\0")
        pkt[0] |= qos << 1 | retain
        sz = 2 + len(topic) + len(msg)
        if qos > 0:
            sz += 2
        _check(sz < 2097152)
        i = _remaining_length(pkt, sz)
        self.sock.write(pkt, i + 1)
        self._field(topic)
        if qos > 0:
            self.pid += 1
            pid = self.pid
            struct.pack_into("!H", pkt, 0, pid & 0xFFFF)  # MicroPython packs the low 16 bits
            self.sock.write(pkt, 2)
        self.sock.write(msg)
        if qos == 1:
            while 1:
                op = self.wait_msg()
                if op == 0x40:
                    _check(self.sock.read(1) == b"\x02")
                    got = self.sock.read(2)
                    if pid == got[0] << 8 | got[1]:
                        return
        elif qos == 2:
            _check(False)  # upstream: `assert 0`, after the packet is sent

    def _sub(self, op, topic, qos, n):
        # SUBSCRIBE (op 0x82, SUBACK of n = 4 bytes) or UNSUBSCRIBE (0xA2, UNSUBACK of 3), then wait for
        # its ack, reading and answering whatever comes first (wait_msg()).
        self.pid += 1
        pid = self.pid
        if API == "1.8.0":
            # umqtt/simple.py@5e49b1bd (1.8.0; e178efef, f20a86ad): _send_subunsub(), the Remaining
            # Length as a variable byte integer, 4 + len(topic) (+1 for a SUBSCRIBE's QoS byte)
            pkt = bytearray(4)
            pkt[0] = op
            i = _remaining_length(pkt, 4 + len(topic) + (n > 3))
            self.sock.write(pkt, i + 1)
            struct.pack_into("!H", pkt, 0, pid & 0xFFFF)
            self.sock.write(pkt, 2)
        else:
            # umqtt/simple.py@803452a1..0d838c3a: struct.pack_into("!BH", pkt, 1, len, pid): the
            # Remaining Length is ONE byte (a topic over 250 bytes wraps it: py/binary.c does not
            # range-check) and the packet id its low 16 bits
            pkt = bytearray(4)
            pkt[0] = op
            pkt[1] = (2 + 2 + len(topic) + (n > 3)) & 0xFF
            pkt[2] = (pid >> 8) & 0xFF
            pkt[3] = pid & 0xFF
            self.sock.write(pkt)
        self._field(topic)
        if n > 3:
            self.sock.write(qos.to_bytes(1, "little"))
        while 1:
            if self.wait_msg() == op + 0x0E:  # SUBACK 0x90, UNSUBACK 0xB0
                resp = self.sock.read(n)
                # 1.8.0 compares the whole id, older ones the two bytes sent
                _check((resp[1] << 8 | resp[2]) == (pid if API == "1.8.0" else pid & 0xFFFF))
                if n > 3 and resp[3] == 0x80:
                    raise MQTTException(resp[3])
                return

    def subscribe(self, topic, qos=0):
        if self.cb is None:
            raise AssertionError("Subscribe callback is not set")
        self._sub(0x82, topic, qos, 4)

    if API in ("1.7.0", "1.8.0"):

        def unsubscribe(self, topic):
            # umqtt/simple.py@0d838c3a (1.7.0): added
            self._sub(0xA2, topic, 0, 3)

    def _read_len(self):
        n = 0
        shift = 0
        while 1:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def wait_msg(self):
        # umqtt/simple.py (every version) wait_msg()
        res = self.sock.read(1)
        self.sock.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            _check(self.sock.read(1)[0] == 0)
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op
        sz = self._read_len()
        n = self.sock.read(2)
        n = n[0] << 8 | n[1]
        topic = self.sock.read(n)
        sz -= n + 2
        pid = 0
        if op & 6:
            p = self.sock.read(2)
            pid = p[0] << 8 | p[1]
            sz -= 2
        msg = self.sock.read(sz)
        self.cb(topic, msg)
        if op & 6 == 2:
            pkt = bytearray(b"\x40\x02\0\0")
            pkt[2:] = struct.pack("!H", pid)
            self.sock.write(pkt)
        elif op & 6 == 4:
            _check(False)
        return op

    def check_msg(self):
        self.sock.setblocking(False)
        return self.wait_msg()
