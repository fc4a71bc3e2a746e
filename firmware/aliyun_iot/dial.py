# Opening an MQTT connection through whichever umqtt.simple generation the
# firmware carries (1.3.4: ssl=True + ssl_params; 1.4.0: SSLContext only;
# 1.6+: both), detected from what its constructor and connect() accept, never
# from a version number; and a session's (re)connection on the policy of
# docs/life-after-online.md. Imported for a connection attempt and dropped
# after it: the running session does not hold this code.
import sys
import time

from umqtt import simple

from aliyun_iot import IotError, _stage, backoff_ms, log

_real = _t = last = None  # while umqtt connects: its socket module, the timeout, the socket it opened


def nodelay(sock):
    # Nagle off: umqtt writes a packet in several writes; each after the first would wait for an ACK.
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: lwIP and Linux share the numbers
    except (OSError, AttributeError):
        pass


# While umqtt.simple connects, this module stands in for its module-level `socket` (socket() and
# getaddrinfo() below), so that the socket it opens has a timeout (1.3.4 and 1.4.0 connect() take none)
# and Nagle off, and a failed DNS lookup is named.


def socket(*args):
    global last
    s = last = _real.socket(*args)
    s.settimeout(_t)
    nodelay(s)
    return s


def getaddrinfo(host, *args):
    try:
        return _real.getaddrinfo(host, *args)
    except OSError as e:
        raise IotError("DNS lookup of %s failed: %s" % (host, e), "dns", True)


def dial(cfg, login, tls_on, keepalive, what="connection"):
    """Connect and return (the connected MQTTClient, its socket under TLS, the umqtt.simple API
    generation); IotError when it cannot (code connack<rc> for a CONNACK refusal)."""
    host, port = cfg["host"], cfg["port"]  # config.load() resolved them
    t = cfg["timeout"]
    ctx = cfg["ctx"] if tls_on else None  # built on a near-empty heap (boot, registration) and kept
    global _real, _t, last
    _real, _t, last = simple.socket, t, None
    simple.socket = sys.modules[__name__]
    c = None
    try:
        try:
            c = simple.MQTTClient(login[0], host, port, login[1], login[2], keepalive, ssl=ctx,
                                  ssl_params={})
            gen = None  # 1.3.4 or 1.6: connect() tells
        except TypeError:
            c = simple.MQTTClient(login[0], host, port, login[1], login[2], keepalive, ssl=ctx)
            gen = "1.4.0"
        try:
            c.connect(True, t)
            gen = "1.6"
        except TypeError:
            if c.sock is not None:
                raise
            if ctx and gen is None:  # 1.3.4: ssl is a flag, and the root goes in ssl_params every time
                c.ssl_params = _stage("tls", "params", (), cfg, host)
            c.connect(True)
            gen = gen or "1.3.4"
    except Exception as e:
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass
        from aliyun_iot.neterr import connecting

        err = connecting(e, "%s to %s:%d" % (what, host, port))
        if err is None:
            raise
        raise err
    finally:
        simple.socket = _real
    return c, last, gen


def retry(s):
    """One connection attempt for offline session s: (the connected MQTTClient, its socket under TLS), for
    the session to wrap in its Link once this module is dropped; None on failure, with the next attempt
    scheduled on the policy."""
    import gc

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
    s.fails = 0
    s.connects += 1
    s.tx = s.rx = time.ticks_ms()
    s.ping = None
    s.pend = {}
    if s.led:
        s.led.value(0)
    if s.connects == 1:
        log("umqtt.simple API generation: " + gen)
    log("connected (connection %d)" % s.connects)
    return c, raw
