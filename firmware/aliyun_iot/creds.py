# The platform's request signature (HMAC over hashlib: stock ESP32 firmware
# has no hmac module), the MQTT login triples (clientId, username, password)
# of a stored credential, and a session's state set up from its login
# (Session.__init__, so that this code is not held for the session's life).
# No I/O. Registration's own logins are in register.py and https.py, which
# use sign() from here.
import hashlib
import time
from binascii import hexlify

from micropython import const

from aliyun_iot import IotError

_MAX_PREFIX = const(64)
# (Few module-level and argument names: each is a qstr, interned for good when the module loads.)


def hmac_digest(method, key, msg):
    """Raw HMAC digest of msg keyed by key; method is hmacsha256, hmacsha1 or hmacmd5."""
    # A tuple of constants: its strings are not interned (a dict's keys would be); hmac<name>: hashlib.<name>.
    ok = ("hmacsha256", "hmacsha1", "hmacmd5")
    if method not in ok:
        raise IotError("sign_method %r not supported; allowed: %s" % (method, ", ".join(ok)), "config")
    h = getattr(hashlib, method[4:])
    key = key if isinstance(key, (bytes, bytearray)) else key.encode()
    # All three hashes have a 64-byte block; longer keys are hashed first (RFC 2104).
    if len(key) > 64:
        key = h(key).digest()
    key = key + bytes(64 - len(key))
    inner = h(bytes(b ^ 0x36 for b in key))
    inner.update(msg if isinstance(msg, (bytes, bytearray)) else msg.encode())
    outer = h(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def plaintext(data):
    """The signed string of the parameters in dict data: names sorted, name+value concatenated, no
    separator."""
    return "".join(k + str(data[k]) for k in sorted(data))


def sign(method, secret, data):
    """Lower-case hex HMAC of the platform's plaintext of the parameters in data, keyed by secret."""
    return hexlify(hmac_digest(method, secret, plaintext(data))).decode()


def prefix(v):
    """v checked as the identity part of a clientId."""
    if not 0 < len(v) <= _MAX_PREFIX:
        raise IotError("clientId prefix %r must be 1 to %d characters" % (v, _MAX_PREFIX), "config")
    return v


def login_for(cred, cfg):
    """clientId, username, password of a normal connection with a stored credential (see store.py): a
    DeviceSecret's signed login, or a regnwl deviceToken's connwl login."""
    pk, dn = cred["pk"], cred["dn"]
    if cred["kind"] == "token":
        return "%s|securemode=-2,authType=connwl|" % cred["cid"], dn + "&" + pk, cred["tok"]
    ident = prefix(pk + "." + dn)
    method = cfg["sign_method"]
    ts = "2524608000000"  # the timestamp is salt only; the C SDK sends this fixed value
    cid = "%s|securemode=%d,signmethod=%s,timestamp=%s|" % (ident, 2 if cfg["tls"] else 3, method, ts)
    return cid, dn + "&" + pk, sign(method, cred["ds"], {
        "clientId": ident, "deviceName": dn, "productKey": pk, "timestamp": ts})


def session(s, cfg, cred):
    """Session.__init__ (session.py): the state of Session s for cfg and the stored credential cred (its
    login computed once; this module is not held for the session's life)."""
    s.login = login_for(cred, cfg)  # computed once: this module is dropped once it returns
    # What a reconnection needs of config.json (no Wi-Fi password, no ProductSecret); ctx: the TLS
    # context the boot built (None without TLS).
    s.cfg = {k: cfg.get(k) for k in ("host", "port", "tls", "ca", "ctx", "timeout", "keepalive",
                                     "backoff_ms", "retry_cap_s", "refused_cap_s")}
    # led: a machine.Pin (set by the boot flow), on while offline; on_error: fn(exc), what the
    # application should know, reported from check(); on_up: fn(session), after each connection once
    # its subscriptions are sent; ping: when an unanswered PINGREQ went out.
    s.led = s.on_error = s.on_set = s.on_up = s.link = s.ping = None
    s.want = {}  # post id -> its reply (None until it arrives), for each post waiting (2 at most)
    s.topic = ("/sys/%s/%s/thing/" % (cred["pk"], cred["dn"])).encode()
    # topic -> fn(topic, payload); None: the post replies, True: property sets (both in link.py). What
    # we want: a refusal never removes a topic, every connection subscribes them all.
    s.subs = {s.topic + b"event/property/post_reply": None}
    s.pend = {}  # packet id -> topic, until its SUBACK
    # fails: connections in a row that failed or were lost young (the backoff's exponent); next: when
    # to connect, and while online when the link was made (rx later: it has answered, a round trip).
    s.connects = s.fails = s.n = s.up = 0
    s.next = s.tx = s.rx = s.t = time.ticks_ms()
