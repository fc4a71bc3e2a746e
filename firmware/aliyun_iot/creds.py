# Login triples (clientId, username, password) for each kind of MQTT login,
# and the HTTPS registration form. Pure functions: no I/O but os.urandom.
import os
from binascii import hexlify

from aliyun_iot.errors import ConfigError
from aliyun_iot.sign import sign

_MAX_PREFIX = 64
# The timestamp is salt only; the C SDK sends this fixed value.
TIMESTAMP = "2524608000000"


def fresh_random():
    """A new random value for one registration attempt (16 hex digits from os.urandom)."""
    return hexlify(os.urandom(8)).decode()


def _prefix(p):
    if not 0 < len(p) <= _MAX_PREFIX:
        raise ConfigError("clientId prefix %r must be 1 to %d characters" % (p, _MAX_PREFIX))
    return p


def register_login(pk, ps, dn, method, rnd, auth_type="register", instance_id=None):
    """clientId, username, password for dynamic registration (authType register or regnwl)."""
    opts = "securemode=2,authType=%s,signmethod=%s,random=%s" % (auth_type, method, rnd)
    if instance_id:
        opts += ",instanceId=" + instance_id
    cid = "%s|%s|" % (_prefix(dn + "." + pk), opts)
    pw = sign(method, ps, {"deviceName": dn, "productKey": pk, "random": rnd})
    return cid, dn + "&" + pk, pw


def secret_login(pk, dn, ds, method, tls=True):
    """clientId, username, password for a normal connection with a DeviceSecret."""
    ident = _prefix(pk + "." + dn)
    opts = "securemode=%d,signmethod=%s,timestamp=%s" % (2 if tls else 3, method, TIMESTAMP)
    pw = sign(method, ds, {"clientId": ident, "deviceName": dn, "productKey": pk, "timestamp": TIMESTAMP})
    return "%s|%s|" % (ident, opts), dn + "&" + pk, pw


def token_login(pk, dn, client_id, token):
    """clientId, username, password for a connwl connection with a regnwl deviceToken."""
    return "%s|securemode=-2,authType=connwl|" % client_id, dn + "&" + pk, token


def login_for(cred, cfg):
    """The login triple for a stored credential (see store.py)."""
    if cred["kind"] == "token":
        return token_login(cred["pk"], cred["dn"], cred["cid"], cred["tok"])
    return secret_login(cred["pk"], cred["dn"], cred["ds"], cfg["sign_method"], cfg["tls"])


def _quote(s):
    out = []
    for c in s.encode():
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"-_.~":
            out.append(chr(c))
        else:
            out.append("%%%02X" % c)
    return "".join(out)


def https_form(pk, ps, dn, rnd, method="hmacsha256"):
    """The url-encoded body of POST /auth/register/device."""
    sig = sign(method, ps, {"deviceName": dn, "productKey": pk, "random": rnd})
    fields = (("productKey", pk), ("deviceName", dn), ("random", rnd), ("sign", sig), ("signMethod", method))
    return "&".join(k + "=" + _quote(v) for k, v in fields).encode()
