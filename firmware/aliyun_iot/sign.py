# HMAC over hashlib (stock ESP32 firmware has no hmac module) and the
# platform's request signature.
import hashlib
from binascii import hexlify

from aliyun_iot.errors import ConfigError

_HASHES = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1, "hmacmd5": hashlib.md5}
METHODS = tuple(_HASHES)


def _bytes(v):
    return v if isinstance(v, (bytes, bytearray)) else str(v).encode()


def hmac_digest(method, key, msg):
    """Raw HMAC digest of msg keyed by key; method is hmacsha256, hmacsha1 or hmacmd5."""
    h = _HASHES.get(method)
    if h is None:
        raise ConfigError("sign_method %r not supported; allowed: %s" % (method, ", ".join(METHODS)))
    key = _bytes(key)
    # All three hashes have a 64-byte block; longer keys are hashed first (RFC 2104).
    if len(key) > 64:
        key = h(key).digest()
    key = key + bytes(64 - len(key))
    inner = h(bytes(b ^ 0x36 for b in key))
    inner.update(_bytes(msg))
    outer = h(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def plaintext(params):
    """The signed string: names sorted, name+value concatenated, no separator."""
    return "".join(k + str(params[k]) for k in sorted(params))


def sign(method, secret, params):
    """Lower-case hex HMAC of the platform's plaintext of params, keyed by secret."""
    return hexlify(hmac_digest(method, secret, plaintext(params))).decode()
