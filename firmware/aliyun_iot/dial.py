# Opening an MQTT connection through whichever umqtt.simple generation the
# firmware carries (1.3.4: ssl=True + ssl_params; 1.4.0: SSLContext only;
# 1.6+: both), detected from what its constructor and connect() accept, never
# from a version number; and a session's (re)connection on the policy of the
# README's "Life after online". Imported for a connection attempt and dropped
# after it: the running session does not hold this code.
import time

from umqtt import simple as _umqtt

from aliyun_iot import wdt
from aliyun_iot.errors import IotError, NetworkError, Refused
from aliyun_iot.mqtt import Link


def nodelay(sock, mod):
    # Nagle off: umqtt writes a packet in several writes; each after the first would wait for an ACK.
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: lwIP and Linux share the numbers
    except (OSError, AttributeError):
        pass


class _Sockets:
    # Stands in for umqtt.simple's module-level `socket` while it connects, so that the socket it opens
    # has a timeout (1.3.4 and 1.4.0 connect() take none) and Nagle off.
    def __init__(self, mod, timeout):
        self._mod = mod
        self.timeout = timeout
        self.last = None

    def socket(self, *args):
        s = self.last = self._mod.socket(*args)
        s.settimeout(self.timeout)
        nodelay(s, self._mod)
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


def dial(cfg, login, tls_on=True, keepalive=0, max_packet=1024, what="connection"):
    """Connect and return the open Link; IotError (Refused for a CONNACK refusal) when it cannot."""
    host, port = endpoint(cfg)
    t = cfg["timeout"]
    cid, user, pw = login
    ctx = params = None
    if tls_on:
        from aliyun_iot import forget, tls

        ctx, params = tls.for_host(cfg, host)
        forget("tls")  # the context holds the root; the module and the DER go
    real = _umqtt.socket
    _umqtt.socket = sk = _Sockets(real, t)
    c = None
    try:
        try:
            c = _umqtt.MQTTClient(cid, host, port, user, pw, keepalive, ssl=ctx, ssl_params=params or {})
            gen = "1.3.4/1.6"
        except TypeError:
            c = _umqtt.MQTTClient(cid, host, port, user, pw, keepalive, ssl=ctx)
            gen = "1.4.0"
        try:
            c.connect(True, t)
            gen = "1.6"
        except TypeError:
            if c.sock is not None:
                raise
            c.connect(True)
            if gen != "1.4.0":
                gen = "1.3.4"
    except _umqtt.MQTTException as e:
        _drop(c)
        raise Refused(e.args[0] if e.args else -1, what)
    except (IndexError, AssertionError):
        # umqtt indexes or asserts on a short or malformed CONNACK.
        _drop(c)
        raise NetworkError("%s: closed before a valid CONNACK" % what, "closed")
    except Exception as e:
        _drop(c)
        from aliyun_iot.neterr import classify

        err = classify(e, "%s to %s:%d" % (what, host, port))
        if err is None:
            raise
        raise err
    finally:
        _umqtt.socket = real
    Link.generation = gen
    return Link(c.sock, t * 1000, max_packet, sk.last, c)


def _drop(c):
    if c is not None and c.sock is not None:
        try:
            c.sock.close()
        except OSError:
            pass


def open_session(s):
    """Connect session s with its stored credential and send its subscriptions (pipelined)."""
    s.close()
    cfg = s.cfg
    s.link = dial(cfg, s._login, cfg["tls"], cfg["keepalive"], 4096)  # the largest packet a session takes
    s.connects += 1
    s._tx = s._rx = time.ticks_ms()
    s._ping = None
    s._pend = {}
    for t in s._subs:
        s._sub(t)


def retry(s):
    """One connection attempt for an offline session; on failure, when the next one is due."""
    import gc

    gc.collect()  # TLS needs a large contiguous block
    try:
        open_session(s)
    except IotError as e:
        s._fails += 1
        # A refused login (device disabled, secret reset in the console) waits on the long cap.
        cap = s.cfg["retry_cap_s"] if e.retry else s.cfg["refused_cap_s"]
        d = wdt.backoff_ms(s._fails, s.cfg["backoff_ms"], cap * 1000)
        s._next = time.ticks_add(time.ticks_ms(), d)
        s.log("connect failed (%s): %s; next try in %d s" % (e.code, e.msg, d // 1000))
        return
    s._fails = 0
    if s.led:
        s.led.value(0)
    s.log("connected (connection %d)" % s.connects)
