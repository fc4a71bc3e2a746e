"""Host-side signing and clientId parsing, written independently of the firmware's signer.

The emulator checks the device's arithmetic, so it must not share code with it: hmac/hashlib here,
a hand-rolled HMAC over hashlib in firmware/aliyun_iot/sign.py.
"""

import hashlib
import hmac

_HASHES = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1, "hmacmd5": hashlib.md5}
METHODS = tuple(_HASHES)


class ClientIdError(ValueError):
    """The clientId does not have the platform's `{id}|k=v,k=v|` shape."""


def plaintext(params):
    """Names sorted alphabetically, each name followed by its value, no separator."""
    return "".join(name + str(params[name]) for name in sorted(params))


def sign(method, secret, params):
    """Lower-case hex HMAC of plaintext(params) keyed by secret. method: hmacmd5|hmacsha1|hmacsha256."""
    digest = _HASHES.get(method.lower())
    if digest is None:
        raise ValueError("unknown sign method %r" % method)
    return hmac.new(secret.encode(), plaintext(params).encode(), digest).hexdigest()


def check(method, secret, params, given):
    """True when `given` is the signature of params (hex in either case), in constant time."""
    if not isinstance(given, str) or not given:
        return False
    try:
        want = sign(method, secret, params)
    except ValueError:
        return False
    return hmac.compare_digest(want.encode(), given.lower().encode())


def parse_client_id(client_id):
    """Split `{prefix}|k=v,k=v|` into (prefix, {k: v}). Option names are kept as sent."""
    if not isinstance(client_id, str):
        raise ClientIdError("clientId missing")
    bar = client_id.find("|")
    if bar < 0 or not client_id.endswith("|") or bar == len(client_id) - 1:
        raise ClientIdError("clientId lacks the |options| part")
    prefix = client_id[:bar]
    body = client_id[bar + 1:-1]
    if "|" in body:
        raise ClientIdError("clientId has more than one options part")
    options = {}
    for item in body.split(","):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ClientIdError("clientId option %r is not name=value" % item)
        options[name] = value
    return prefix, options
