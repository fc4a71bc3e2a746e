"""The platform's verdict on a CONNECT or an HTTPS registration, as pure functions of the registry.

CONNACK codes, as the platform gives them:
  2 identifier rejected: clientId not in `{id}|k=v,...|` form, bad or missing options, keepalive outside
    30..1200, a registration (or connwl) over plain TCP, securemode that does not match the transport
  4 bad username or password: unknown product or device, wrong signature or token, dynamic registration
    (or regnwl) disabled, device already activated: the platform does not tell them apart
"""

import hmac
from dataclasses import dataclass, field

from . import registry
from .sign import METHODS, ClientIdError, check, parse_client_id

ACCEPTED = 0
IDENTIFIER_REJECTED = 2
SERVER_UNAVAILABLE = 3
BAD_CREDENTIALS = 4
KEEPALIVE_MIN, KEEPALIVE_MAX = 30, 1200
REGISTRATIONS = ("register", "regnwl")


@dataclass
class Connect:
    """What the gate learned from a CONNECT: kind is register | regnwl | connect | connwl."""

    code: int = ACCEPTED
    reason: str = ""
    kind: str = ""
    pk: str = ""
    dn: str = ""
    prefix: str = ""
    options: dict = field(default_factory=dict)

    @property
    def fault_kind(self):
        return "connect" if self.kind in ("connect", "connwl") else self.kind


def _refuse(code, reason, **kw):
    return Connect(code=code, reason=reason, **kw)


def classify(client_id, username, keepalive, tls):
    """Parse and check the CONNECT's shape (no registry needed). Returns a Connect with code 0, 2 or 4."""
    try:
        prefix, opts = parse_client_id(client_id)
    except ClientIdError as e:
        return _refuse(IDENTIFIER_REJECTED, str(e))
    auth_type = opts.get("authType", "")
    kind = {"register": "register", "regnwl": "regnwl", "connwl": "connwl", "": "connect"}.get(auth_type)
    if kind is None:
        return _refuse(IDENTIFIER_REJECTED, "unknown authType")
    dn, amp, pk = (username or "").partition("&")
    info = {"kind": kind, "pk": pk if amp else "", "dn": dn if amp else "", "prefix": prefix, "options": opts}
    if len(prefix) > 64 or (kind != "connwl" and not prefix):
        return _refuse(IDENTIFIER_REJECTED, "clientId prefix empty or over 64 characters", **info)
    mode = opts.get("securemode")
    if kind == "connect":
        allowed = ("2", "-2") if tls else ("3",)
    else:
        allowed = ("2", "-2") if tls else ()
    if mode not in allowed:
        why = "over plain TCP" if not tls and kind != "connect" else "securemode %r on %s" % (
            mode, "TLS" if tls else "plain TCP")
        return _refuse(IDENTIFIER_REJECTED, why, **info)
    if kind != "connwl":
        if opts.get("signmethod", "").lower() not in METHODS:
            return _refuse(IDENTIFIER_REJECTED, "signmethod missing or unknown", **info)
    if kind in REGISTRATIONS and not opts.get("random"):
        return _refuse(IDENTIFIER_REJECTED, "random missing", **info)
    if not KEEPALIVE_MIN <= keepalive <= KEEPALIVE_MAX:
        return _refuse(IDENTIFIER_REJECTED, "keepalive %d outside 30..1200" % keepalive, **info)
    if not amp or not pk or not dn:
        return _refuse(BAD_CREDENTIALS, "username is not {dn}&{pk}", **info)
    if kind == "regnwl" and not registry.valid_dn(dn):
        return _refuse(IDENTIFIER_REJECTED, "bad DeviceName", **info)
    return Connect(**info)


def verify(c, password, data):
    """(code, reason) for a classified CONNECT against the registry dict."""
    prod = data["products"].get(c.pk)
    if prod is None:
        return BAD_CREDENTIALS, "unknown product"
    dev = data["devices"].get(registry.device_key(c.pk, c.dn))
    method = c.options.get("signmethod", "").lower()
    if c.kind in REGISTRATIONS:
        return check_registration(c.kind, prod, dev, c.pk, c.dn, c.options["random"], method, password)
    if dev is None:
        return BAD_CREDENTIALS, "unknown device"
    if c.kind == "connwl":
        if not dev.get("token") or c.prefix != dev.get("client_id"):
            return BAD_CREDENTIALS, "no such clientId for this device"
        if not isinstance(password, str) or not hmac.compare_digest(password.encode(), dev["token"].encode()):
            return BAD_CREDENTIALS, "wrong deviceToken"
        return ACCEPTED, "connwl"
    if not dev.get("secret"):
        return BAD_CREDENTIALS, "device has no DeviceSecret"
    params = {"clientId": c.prefix, "deviceName": c.dn, "productKey": c.pk}
    if "timestamp" in c.options:
        params["timestamp"] = c.options["timestamp"]
    if not check(method, dev["secret"], params, password):
        return BAD_CREDENTIALS, "wrong signature"
    return ACCEPTED, "secret"


def check_registration(kind, prod, dev, pk, dn, random, method, sign):
    """(code, reason) for a registration (register/regnwl/https) by the product's rules."""
    if not prod.get("dynreg"):
        return BAD_CREDENTIALS, "dynamic registration disabled"
    if kind == "regnwl" and not prod.get("regnwl"):
        return BAD_CREDENTIALS, "regnwl not allowed for the product"
    if kind != "regnwl" and dev is None:
        return BAD_CREDENTIALS, "unknown device"
    if dev is not None and dev.get("activated"):
        return BAD_CREDENTIALS, "device already activated"
    params = {"deviceName": dn, "productKey": pk, "random": random}
    if not check(method, prod["ps"], params, sign):
        return BAD_CREDENTIALS, "wrong signature"
    return ACCEPTED, kind
