# One MQTT connection through whichever umqtt.simple generation the firmware
# carries (1.3.4: ssl=True + ssl_params; 1.4.0: SSLContext only; 1.6+: both),
# detected from what its constructor and connect() accept, with a deadline on
# every wait and a bound on every length read off the wire.
import struct

from umqtt import simple as _umqtt

from aliyun_iot import netio, tls
from aliyun_iot.errors import BadReply, NetworkError, Refused

_PUBLISH = 0x30


class _TimedSockets:
    # Stands in for umqtt.simple's module-level `socket` so that every socket
    # it opens has a timeout: 1.3.4 and 1.4.0 connect() take none.
    def __init__(self, mod):
        self._mod = mod
        self.timeout = 10
        self.last = None

    def socket(self, *args):
        s = self._mod.socket(*args)
        s.settimeout(self.timeout)
        netio.nodelay(s, self._mod)
        self.last = s  # the raw socket under umqtt's TLS socket, which carries the timeout
        return s

    def getaddrinfo(self, host, port, *args):
        try:
            return self._mod.getaddrinfo(host, port, *args)
        except OSError as e:
            raise NetworkError("DNS lookup of %s failed: %s" % (host, e), "dns")


def endpoint(cfg):
    """(host, port) of the MQTT endpoint for cfg."""
    host = cfg["host"]
    if not host:
        if cfg["instance_id"]:
            host = cfg["instance_id"] + ".mqtt.iothub.aliyuncs.com"
        else:
            host = "%s.iot-as-mqtt.%s.aliyuncs.com" % (cfg["product_key"], cfg["region"])
    return host, cfg["port"] or (8883 if cfg["tls"] else 1883)


class Link:
    """An open MQTT session. .client is the umqtt.simple MQTTClient; .sock its deadline socket."""

    generation = None

    def __init__(self, cfg, login, tls_on=True, keepalive=0, max_packet=1024, what="connection"):
        self.cfg = cfg
        self.host, self.port = endpoint(cfg)
        self.max_packet = max_packet
        cid, user, pw = login
        timeout = cfg["timeout"]
        if not isinstance(_umqtt.socket, _TimedSockets):
            _umqtt.socket = _TimedSockets(_umqtt.socket)
        _umqtt.socket.timeout = timeout
        ctx = params = None
        if tls_on:
            rs = tls.roots(cfg)
            ctx = tls.context(rs)
            params = tls.legacy_params(rs, self.host, cfg["ca"])
            rs = None
        try:
            c = _umqtt.MQTTClient(
                cid, self.host, self.port, user, pw, keepalive, ssl=ctx, ssl_params=params or {}
            )
            gen = "1.3.4/1.6"
        except TypeError:
            c = _umqtt.MQTTClient(cid, self.host, self.port, user, pw, keepalive, ssl=ctx)
            gen = "1.4.0"
        try:
            try:
                c.connect(True, timeout)
                gen = "1.6"
            except TypeError:
                if c.sock is not None:
                    raise
                c.connect(True)
                if gen != "1.4.0":
                    gen = "1.3.4"
        except _umqtt.MQTTException as e:
            self._drop(c)
            raise Refused(e.args[0] if e.args else -1, what)
        except (IndexError, AssertionError):
            # umqtt indexes or asserts on a short or malformed CONNACK.
            self._drop(c)
            raise NetworkError("%s: connection closed before a valid CONNACK" % what, "closed")
        except Exception as e:
            self._drop(c)
            err = netio.classify(e, "%s to %s:%d" % (what, self.host, self.port))
            if err is None:
                raise
            raise err
        Link.generation = gen
        self.client = c
        self.sock = c.sock = netio.Deadline(c.sock, timeout * 1000, max_packet, _umqtt.socket.last)

    @staticmethod
    def _drop(c):
        if c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass

    def read_packet(self, first=None):
        """(header byte, body) of the next packet; first is an already-read header byte."""
        s = self.sock
        hdr = first or s.read(1)
        if not hdr:
            raise NetworkError("connection closed by the server", "closed")
        n = shift = 0
        for _ in range(4):
            b = s.read(1)
            if not b:
                raise NetworkError("connection closed inside a packet", "closed")
            n |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                break
            shift += 7
        else:
            raise BadReply("malformed packet length")
        if n > self.max_packet:
            raise BadReply(
                "server announced a %d-byte packet; at most %d are accepted" % (n, self.max_packet)
            )
        body = s.read(n) if n else b""
        if len(body) != n:
            raise NetworkError("connection closed inside a packet", "closed")
        return hdr[0], body

    def parse_publish(self, hdr, body):
        """(topic, payload) of a PUBLISH; acknowledges QoS 1."""
        if len(body) < 2:
            raise BadReply("malformed PUBLISH")
        tl = body[0] << 8 | body[1]
        topic = bytes(body[2 : 2 + tl])
        pos = 2 + tl
        if hdr & 0x06:
            if hdr & 0x06 == 0x02:
                self.sock.write(b"\x40\x02" + body[pos : pos + 2])
            pos += 2
        if pos > len(body):
            raise BadReply("malformed PUBLISH")
        return topic, body[pos:]

    def subscribe(self, topic, pid):
        """Send SUBSCRIBE (QoS 0) without waiting: its SUBACK is read with the other packets."""
        t = topic.encode() if isinstance(topic, str) else topic
        if len(t) > 122:
            raise ValueError("topic longer than 122 bytes")
        self.sock.write(bytes((0x82, 5 + len(t))) + struct.pack("!HH", pid, len(t)) + t + b"\x00")

    def close(self, disconnect=True):
        """Send DISCONNECT (if asked) and close; errors on the way out are not news."""
        if self.sock is None:
            return
        if disconnect:
            try:
                self.sock.write(b"\xe0\x00")
            except (OSError, NetworkError):
                pass  # the link is being dropped anyway
        self.sock.close()
        self.sock = None
