# The platform's registration reply (MQTT or HTTPS), decoded, checked and
# turned into the credential to store. Imported once a reply has arrived and
# its link is closed: not in RAM during the registration's TLS handshake.
from aliyun_iot import IotError


def _text(d, key, hi):
    v = d.get(key)
    # Printable ASCII, checked on bytes: each character taken out of a str would be interned for good.
    if not isinstance(v, str) or not 0 < len(v) <= hi or not all(32 < c < 127 for c in v.encode()):
        raise IotError("registration reply has no valid %s (1 to %d printable characters)" % (key, hi),
                       "bad_reply", True)
    return v


def credential(d, pk, dn, mode):
    """The credential dict from the platform's decoded registration reply; IotError bad_reply if it is not
    one."""
    if not isinstance(d, dict):
        raise IotError("registration reply is not a JSON object", "bad_reply", True)
    if d.get("productKey") != pk or d.get("deviceName") != dn:
        raise IotError("registration reply names another device", "bad_reply", True)
    if mode == "regnwl":
        return {
            "kind": "token",
            "pk": pk,
            "dn": dn,
            "cid": _text(d, "clientId", 128),
            "tok": _text(d, "deviceToken", 256),
        }
    return {"kind": "secret", "pk": pk, "dn": dn, "ds": _text(d, "deviceSecret", 128)}
