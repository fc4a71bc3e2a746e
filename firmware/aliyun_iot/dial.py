# Opening an MQTT connection through whichever umqtt.simple generation the
# firmware carries (1.3.4: ssl=True + ssl_params; 1.4.0: SSLContext only;
# 1.6+: both), detected from what its constructor and connect() accept, never
# from a version number; and a session's (re)connection on the policy of the
# README's "Life after online". Imported for a connection attempt and dropped
# after it: the running session does not hold this code.
import sys
import time

from umqtt import simple

from aliyun_iot import IotError, backoff_ms, forget, log

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


def dial(cfg, login, tls_on, keepalive, max_packet, what="connection"):
    """Connect and return (the open Link, the umqtt.simple API generation); IotError when it cannot
    (code connack<rc> for a CONNACK refusal)."""
    host, port = cfg["host"], cfg["port"]  # config.load() resolved them
    t = cfg["timeout"]
    ctx = params = None
    if tls_on:
        if cfg.get("ctx") is None:  # the boot builds it on a near-empty heap; a session keeps it
            from aliyun_iot import tls

            cfg["ctx"] = tls.for_host(cfg, host)
            del tls
            forget("tls")  # the context holds the root; the module and the DER go
        ctx, params = cfg["ctx"]
    global _real, _t, last
    _real, _t, last = simple.socket, t, None
    simple.socket = sys.modules[__name__]
    c = None
    try:
        try:
            c = simple.MQTTClient(login[0], host, port, login[1], login[2], keepalive, ssl=ctx,
                                  ssl_params=params or {})
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
            c.connect(True)
            gen = gen or "1.3.4"
    except Exception as e:
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass
        if isinstance(e, simple.MQTTException):
            rc = e.args[0] if e.args else -1
            raise IotError("%s refused, CONNACK %d" % (what, rc), "connack%d" % rc, rc == 3)
        if isinstance(e, (IndexError, AssertionError)):  # umqtt indexes or asserts on a bad CONNACK
            raise IotError(what + ": closed before a valid CONNACK", "closed", True)
        from aliyun_iot.neterr import classify

        err = classify(e, "%s to %s:%d" % (what, host, port))
        if err is None:
            raise
        raise err
    finally:
        simple.socket = _real
    if ctx and gen != "1.3.4":
        cfg["ctx"] = (ctx, None)  # only 1.3.4 takes the root (the DER) at every connection
    from aliyun_iot.link import Link  # after the handshake: not in RAM while TLS needs the most

    return Link(c.sock, t * 1000, max_packet, last, c), gen


def open_link(s):
    """Connect session s with its stored credential and send its subscriptions; IotError when it cannot."""
    s.close()
    cfg = s.cfg
    s.link, gen = dial(cfg, s.login, cfg["tls"], cfg["keepalive"], 4096)  # the largest packet a session takes
    s.connects += 1
    s.tx = s.rx = time.ticks_ms()
    s.ping = None
    s.pend = {}
    for t in s.subs:  # pipelined: the SUBACKs are read with the other packets
        s._sub(t)
    return gen


def retry(s):
    """One connection attempt for offline session s; on failure, set when the next one is due."""
    import gc

    gc.collect()  # TLS needs a large contiguous block
    cfg = s.cfg
    try:
        gen = open_link(s)
    except IotError as e:
        s.fails += 1
        # A refused login (device disabled, secret reset in the console) waits on the long cap.
        cap = cfg["retry_cap_s"] if e.retry else cfg["refused_cap_s"]
        d = backoff_ms(s.fails, cfg["backoff_ms"], cap * 1000)
        s.next = time.ticks_add(time.ticks_ms(), d)
        log("connect failed (%s): %s; next try in %d s" % (e.code, e.msg, d // 1000))
        return
    s.fails = 0
    if s.led:
        s.led.value(0)
    if s.connects == 1:
        log("umqtt.simple API generation: " + gen)
    log("connected (connection %d)" % s.connects)
