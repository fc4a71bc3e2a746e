# Dynamic registration over MQTT/TLS (authType register or regnwl): connect,
# do not subscribe, wait with a deadline for the one PUBLISH on /ext/register
# (or /ext/regnwl), validate it, DISCONNECT. Never reconnect inside an
# attempt: each reconnect is a new registration that voids the secret just
# issued. Imported only on a boot that has no stored credential.
import json
import time

from aliyun_iot import creds
from aliyun_iot.errors import BadReply, Timeout
from aliyun_iot.mqtt import _PUBLISH, Link

_MAX_REPLY = 512
_TOPICS = (b"/ext/register", b"/ext/regnwl")


def _text(d, key, hi):
    v = d.get(key)
    if not isinstance(v, str) or not 0 < len(v) <= hi or not all(" " < c <= "~" for c in v):
        raise BadReply("registration reply has no valid %s (1 to %d printable characters)" % (key, hi))
    return v


def parse_reply(payload, pk, dn, mode):
    """The credential dict from the platform's registration reply; BadReply if it is not one."""
    try:
        d = json.loads(payload)
    except ValueError:
        raise BadReply("registration reply is not JSON")
    return check_reply(d, pk, dn, mode)


def check_reply(d, pk, dn, mode):
    """The credential dict from a decoded reply object."""
    if not isinstance(d, dict):
        raise BadReply("registration reply is not a JSON object")
    if d.get("productKey") != pk or d.get("deviceName") != dn:
        raise BadReply("registration reply names another device")
    if mode == "regnwl":
        return {
            "kind": "token",
            "pk": pk,
            "dn": dn,
            "cid": _text(d, "clientId", 128),
            "tok": _text(d, "deviceToken", 256),
        }
    return {"kind": "secret", "pk": pk, "dn": dn, "ds": _text(d, "deviceSecret", 128)}


def register_once(cfg, dn):
    """One registration attempt over MQTT; returns the credential dict."""
    pk = cfg["product_key"]
    mode = cfg["mode"]
    login = creds.register_login(
        pk, cfg["product_secret"], dn, cfg["sign_method"], creds.fresh_random(), mode, cfg["instance_id"]
    )
    # A keepalive the platform accepts on any login, though this session lasts seconds.
    link = Link(cfg, login, True, cfg["keepalive"], _MAX_REPLY + 64, "registration")
    try:
        limit = cfg["timeout"] * 1000
        t0 = time.ticks_ms()
        while True:
            try:
                if time.ticks_diff(time.ticks_ms(), t0) > limit:
                    raise Timeout("")
                hdr, body = link.read_packet()
            except Timeout:
                raise Timeout("no registration reply within %d s" % cfg["timeout"])
            if hdr & 0xF0 != _PUBLISH:
                continue  # e.g. a PINGRESP: not the reply
            topic, payload = link.parse_publish(hdr, body)
            if topic not in _TOPICS:
                raise BadReply("registration reply on unexpected topic %s" % topic.decode())
            if len(payload) > _MAX_REPLY:
                raise BadReply("registration reply larger than %d bytes" % _MAX_REPLY)
            return parse_reply(payload, pk, dn, mode)
    finally:
        link.close()
