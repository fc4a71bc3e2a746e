# Opening an MQTT connection through whichever umqtt.simple generation the
# firmware carries (1.3.4, 1.4.0, 1.6+: their constructors and connect()
# differ), detected from what they accept, never from a version number; and
# a session's (re)connection on the policy of docs/life-after-online.md.
# Imported for a connection attempt and dropped after it: the running
# session does not hold this code.
import gc
import select
import sys
import time

from umqtt import simple

from aliyun_iot import IotError, backoff_ms, log, sleep_ms

# While umqtt connects: [deadline (ticks), its length (ms), TLS context or None, host, umqtt's socket module,
# the socket it opened]; None otherwise. (One name: each module-level or argument name is a qstr, for good.)
_t = None


def nodelay(sock):
    # Nagle off: umqtt writes a packet in several writes; each after the first would wait for an ACK.
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: lwIP and Linux share the numbers
    except (OSError, AttributeError):
        pass


# While umqtt.simple connects, this module stands in for its module-level `socket` (the class socket and
# getaddrinfo() below). TCP, the TLS handshake and the CONNACK end by one deadline, every wait in it at
# most a second with the watchdog fed. umqtt sees a plain socket (no ssl argument, whatever its
# generation): the TLS is ours, non-blocking (do_handshake_on_connect=False, driven by umqtt's first
# write). A socket timeout would not do: on the ESP32 it restarts after every byte that arrives
# (ports/esp32/modsocket.c@v1.23.0, _socket_read_data), so a trickle holds it for ever.
# (Few new names and strings: each is a qstr, kept for good.)


class socket:
    def __init__(self, *args):
        self.sock = self.raw = _t[5] = _t[4].socket(*args)
        nodelay(self.raw)
        self.poll = select.poll()

    def settimeout(self, t):  # umqtt 1.6's connect(timeout): the deadline rules instead
        pass

    def check(self, n):
        # Wait for poll events n, by the deadline, a second at most, fed.
        left = time.ticks_diff(_t[0], time.ticks_ms())
        if left <= 0:
            raise IotError("timeout", "timeout", True)
        sleep_ms(0)
        self.poll.register(self.sock, n)
        return self.poll.poll(min(left, 1000))

    def connect(self, v):  # v: the address
        self.raw.setblocking(False)
        try:
            self.raw.connect(v)
        except OSError as e:
            if e.args[0] not in (115, 119):  # EINPROGRESS: Linux, the ESP32's newlib
                raise
        while True:
            r = self.check(4)  # POLLOUT: connected
            if r:
                break
        if r[0][1] & 0x18:  # POLLERR | POLLHUP
            raise IotError("TCP connect failed", "network", True)
        if _t[2]:
            # The TLS socket holds mbedTLS's context (over 500 bytes in one block): the waits' garbage
            # collected first. The handshake runs in the writes below (modtls_mbedtls.c@v1.23.0:
            # socket_write).
            self.poll = r = None
            gc.collect()
            self.sock = _t[2].wrap_socket(self.raw, server_hostname=_t[3], do_handshake_on_connect=False)
            self.poll = select.poll()

    def write(self, buf, n=None):
        # umqtt.simple writes a str field as it is (its UTF-8, as a socket's write does on the board)
        mv = memoryview(buf.encode() if type(buf) is str else buf)
        if n is not None:
            mv = mv[:n]
        while mv:
            k = self.sock.write(mv)
            if k is None:  # not yet (the handshake, or a full buffer): its poll says which way it waits
                self.check(4)
            else:
                mv = mv[k:]
        return n

    def read(self, n):
        buf = bytearray(n)
        got = 0
        while got < n:
            k = self.sock.readinto(memoryview(buf)[got:])
            if k is None:
                self.check(1)
            elif k:
                got += k
            else:
                return buf[:got]  # umqtt: not a CONNACK
        return buf

    def close(self):
        self.sock.close()


def getaddrinfo(host, *args):
    try:
        r = _t[4].getaddrinfo(host, *args)
    except OSError as e:
        raise IotError("DNS lookup of %s failed: %s" % (host, e), "dns", True)
    _t[0] = time.ticks_add(time.ticks_ms(), _t[1])  # DNS has no deadline of its own (lwIP's retries)
    return r


def opened(cfg, host, port, ctx, req):
    """HTTPS's connection (registration, an OTA download): TCP to host:port, TLS with ctx (None: plain)
    and the request req written, within 3 x timeout of the DNS answer, as a connection of dial() is (the
    handshake runs in the write). Returns the stand-in socket: .sock the TLS socket, .raw the TCP one."""
    import socket as m

    global _t
    _t = [0, 3000 * cfg["timeout"], ctx, host, m, None]
    s = None
    try:
        a = getaddrinfo(host, port)[0][-1]
        s = socket()
        s.connect(a)
        s.write(req)
        return s
    except Exception:
        if s:
            s.close()
        raise
    finally:
        _t = None


def dial(cfg, login, tls, keepalive, name="connection"):
    """Connect (with TLS if tls) and return (the connected MQTTClient, its socket under TLS, the
    umqtt.simple API generation); IotError when it cannot (code connack<rc> for a CONNACK refusal), its
    message naming the connection (name). TCP, TLS and the CONNACK within 3 x timeout of the DNS answer."""
    host, port = cfg["host"], cfg["port"]  # config.load() resolved them
    t = cfg["timeout"]
    global _t
    # The TLS context was built on a near-empty heap (boot, registration) and kept.
    _t = [time.ticks_add(time.ticks_ms(), 3000 * t), 3000 * t, cfg["ctx"] if tls else None, host,
          simple.socket, None]
    simple.socket = sys.modules[__name__]
    c = None
    try:
        try:
            c = simple.MQTTClient(login[0], host, port, login[1], login[2], keepalive, ssl_params={})
            g = 0  # 1.3.4 or 1.6: connect() tells
        except TypeError:
            c = simple.MQTTClient(login[0], host, port, login[1], login[2], keepalive)
            g = 1  # 1.4.0
        try:
            c.connect(True, t)
            g = 2  # 1.6
        except TypeError:
            if c.sock is not None:
                raise
            c.connect(True)
        c.sock = c.sock.sock  # the TLS (or TCP) socket itself, for the Link
        raw = _t[5]
    except Exception as e:
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass
        from aliyun_iot.neterr import connecting

        err = connecting(e, "%s to %s:%d" % (name, host, port))
        if err is None:
            raise
        raise err
    finally:
        simple.socket = _t[4]
        _t = None
    # The generations as a tuple of constants: its strings are not interned.
    return c, raw, ("1.3.4", "1.4.0", "1.6")[g]


def retry(s):
    """One connection attempt for offline session s: (the connected MQTTClient, its socket under TLS), for
    the session to wrap in its Link once this module is dropped; None on failure, with the next attempt
    scheduled on the policy."""
    gc.collect()  # TLS needs a large contiguous block
    cfg = s.cfg
    try:
        c, raw, gen = dial(cfg, s.login, cfg["tls"], cfg["keepalive"])
    except IotError as e:
        s.fails += 1
        # A refused login (device disabled, secret reset in the console) waits on the long cap.
        cap = cfg["retry_cap_s"] if e.retry else cfg["refused_cap_s"]
        d = backoff_ms(s.fails, cfg["backoff_ms"], cap * 1000)
        s.next = time.ticks_add(time.ticks_ms(), d)
        log("connect failed (%s): %s; next try in %d s" % (e.code, e.msg, d // 1000))
        return None
    s.connects += 1  # s.fails stays until the link proves itself (session.py: _lost)
    s.tx = s.next = time.ticks_ms()  # next: when the link was made, until it is lost
    s.rx = time.ticks_add(s.next, -1)  # before next until a packet comes: then it has answered
    s.ping = None
    s.pend = {}
    if s.led:
        s.led.value(0)
    if s.connects == 1:
        log("umqtt.simple API generation: " + gen)
    log("connected (connection %d)" % s.connects)
    return c, raw
