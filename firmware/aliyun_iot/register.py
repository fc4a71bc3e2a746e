# Dynamic registration over MQTT/TLS (authType register or regnwl): connect,
# do not subscribe, wait with a deadline for the one PUBLISH on /ext/register
# (or /ext/regnwl), validate it, DISCONNECT. Never reconnect inside an
# attempt: each reconnect is a new registration that voids the secret just
# issued. Imported only on a boot that has no stored credential, and dropped
# once the credential is stored.
import gc
import json
import time

from micropython import const

from aliyun_iot import IotError, _stage, backoff_ms, forget, log, sleep_ms, state

_MAX_REPLY = const(512)


def fresh_random():
    """A new random value for one registration attempt (16 hex digits from os.urandom)."""
    import os
    from binascii import hexlify

    return hexlify(os.urandom(8)).decode()


def _login(cfg, pk, dn, mode):
    # The clientId, username and password of a registration (authType register or regnwl). A frame of its
    # own: once it returns, nothing on the stack points at the signing code, which forget() then drops.
    from aliyun_iot import creds

    rnd = fresh_random()
    method = cfg["sign_method"]
    opts = "securemode=2,authType=%s,signmethod=%s,random=%s" % (mode, method, rnd)
    if cfg["instance_id"]:
        opts += ",instanceId=" + cfg["instance_id"]
    return ("%s|%s|" % (creds.prefix(dn + "." + pk), opts), dn + "&" + pk,
            creds.sign(method, cfg["product_secret"], {"deviceName": dn, "productKey": pk, "random": rnd}))


def _receive(cfg, login):
    # Connect, wait with a deadline for the one PUBLISH, close: (topic, payload). A frame of its own: once
    # it returns, nothing on the stack points at the link, and its TLS memory is free for the parsing.
    if cfg["ctx"] is None:  # registration is TLS even when the session is not (tls: false)
        cfg["ctx"] = _stage("tls", "for_host", (), cfg, cfg["host"])
    # A keepalive the platform accepts on any login, though this session lasts seconds. dial.py is dropped
    # once connected (as a session's reconnection does): link.py's code then takes its room.
    c, raw, _gen = _stage("dial", "dial", (), cfg, login, True, cfg["keepalive"], "registration")
    from aliyun_iot.link import Link  # after the handshake: not in RAM while TLS needs the most

    link = Link(c.sock, cfg["timeout"] * 1000, _MAX_REPLY + 64, raw, c)
    try:
        limit = cfg["timeout"] * 1000
        t0 = time.ticks_ms()
        while True:
            try:
                if time.ticks_diff(time.ticks_ms(), t0) > limit:
                    raise IotError("", "timeout", True)
                hdr, topic, payload = link.recv()
            except IotError as e:
                if e.code != "timeout":
                    raise
                raise IotError("no registration reply within %d s" % cfg["timeout"], "timeout", True)
            if payload is not None:  # else not a PUBLISH (e.g. a PINGRESP): not the reply
                return topic, payload
    finally:
        link.close()


def register_once(cfg, dn):
    """One registration attempt over MQTT; returns the credential dict."""
    pk = cfg["product_key"]
    mode = cfg["mode"]
    login = _login(cfg, pk, dn, mode)
    forget("creds")  # not in RAM during the TLS handshake
    topic, payload = _receive(cfg, login)
    # The connection's code dropped and its garbage collected from this shallow frame, before the reply is
    # parsed (a collection that an allocation starts deep in an import found less room).
    forget("link")
    if topic not in (b"/ext/register", b"/ext/regnwl"):
        raise IotError("registration reply on unexpected topic %s" % topic.decode(), "bad_reply", True)
    if len(payload) > _MAX_REPLY:
        raise IotError("registration reply larger than %d bytes" % _MAX_REPLY, "bad_reply", True)
    try:
        d = json.loads(payload)
    except ValueError:
        raise IotError("registration reply is not JSON", "bad_reply", True)
    from aliyun_iot.reply import credential  # after the handshake: not in RAM while TLS needs the most

    return credential(d, pk, dn, mode)


def obtain(cfg, dn, path):
    """Register (retrying what a retry can fix, with capped backoff and jitter; stopping at once on
    anything else), store the credential, and return it."""
    if cfg["mode"] == "https":
        from aliyun_iot.https import register_once as once
    else:
        once = register_once
    import aliyun_iot

    attempt = 0
    while True:
        attempt += 1
        t = time.ticks_diff(time.ticks_ms(), aliyun_iot._T0)
        log("registering %s/%s mode=%s attempt %d/%d t=%d" % (cfg["product_key"], dn, cfg["mode"], attempt,
                                                             cfg["attempts"], t))
        try:
            cred = once(cfg, dn)
            break
        except IotError as e:
            if not e.retry or attempt >= cfg["attempts"]:
                raise
            d = backoff_ms(attempt - 1, cfg["backoff_ms"])
            log("attempt %d failed: %s (%s); retrying in %d ms" % (attempt, e.msg, e.code, d))
            e = None
            sleep_ms(d)
            gc.collect()  # the next TLS handshake wants large blocks (tls_nomem: out of RAM)
    once = None  # https's register_once: let it go with its module
    forget("https", "reply", "dial", "link", "tls", "neterr")  # the network part is done: room to store
    if not cfg["tls"]:
        cfg["ctx"] = None  # registration's own: a plain session does not keep it
    from aliyun_iot import store

    store.save(cred, path)
    state("stored")
    import hashlib
    from binascii import hexlify

    secret = cred.get("ds") or cred.get("tok")
    # The first 4 hex digits of its SHA-256: enough to tell two apart, useless to an attacker.
    fp = hexlify(hashlib.sha256(secret.encode()).digest())[:4].decode()
    log("credential %s stored: %d chars, sha256 %s..." % (cred["kind"], len(secret), fp))
    state("registered")
    return cred
