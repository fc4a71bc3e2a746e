# The platform's request signature (HMAC over hashlib: stock ESP32 firmware
# has no hmac module) and the MQTT login triples (clientId, username,
# password) of a stored credential. Pure functions, no I/O. Registration's own
# logins are in register.py and https.py, which use sign() from here.
import hashlib
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
