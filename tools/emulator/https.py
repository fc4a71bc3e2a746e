"""HTTPS dynamic registration: `POST /auth/register/device` with a form body, on its own TLS port.

Replies are always HTTP 200 with a JSON body, as the platform's iot-auth endpoint does:
  200   {"code":200,"data":{"productKey","deviceName","deviceSecret"},"message":"success"}
  6289  {"code":6289,"message":"device is already active"}
  and, chosen by the emulator (the platform documents no others that devices rely on):
  460 request parameter error, 6250 product not found, 6100 device not found,
  6288 dynamic registration disabled, 6401 sign check failed;
  HTTP 404/405 for another path or method.
"""

import asyncio
import json
import logging
import urllib.parse

from . import auth, faults, registry
from .sign import METHODS

log = logging.getLogger("emulator")

_MAX_HEAD = 16 * 1024
_MAX_BODY = 64 * 1024
PATH = "/auth/register/device"
_REASONS = {
    "unknown product": (6250, "product not found"),
    "unknown device": (6100, "device not found"),
    "dynamic registration disabled": (6288, "dynamic register is disabled"),
    "device already activated": (6289, "device is already active"),
    "wrong signature": (6401, "sign check failed"),
}


def response(status, body, content_length=None):
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
    length = len(body) if content_length is None else content_length
    head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (status, reason, length))
    return head.encode() + body


def _json(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


class HttpsRegistrar:
    def __init__(self, app):
        self.app = app

    async def serve(self, reader, writer):
        peer = writer.get_extra_info("peername") or ("?", 0)
        label = "%s:%d" % (peer[0], peer[1])
        try:
            await self._serve(reader, writer, label)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError, ValueError) as e:
            log.debug("%s https: connection ended: %s", label, type(e).__name__)
        finally:
            if not writer.is_closing():
                writer.close()

    async def _serve(self, reader, writer, label):
        timeout = self.app.connect_timeout
        first = await asyncio.wait_for(reader.readexactly(1), timeout)
        if first == b"\x16":
            # A TLS ClientHello on this port: it serves plain HTTP (the `plain` TLS fault). Answer in clear,
            # as a plain web server does, so the client's TLS stack fails at once.
            log.info("%s https: TLS ClientHello on a plain port (fault): HTTP 400 in clear", label)
            writer.write(response(400, b"plain HTTP server"))
            return
        head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if len(head) > _MAX_HEAD:
            raise ValueError("request head too long")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0]
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= _MAX_BODY:
            writer.write(response(400, _json({"code": 460, "message": "request parameter error"})))
            return
        body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
        if method == "GET" and path.startswith("/ota/"):  # the OTA console's package (ota.py)
            await self.app.ota.serve_get(writer, path, headers, label)
            return
        if urllib.parse.urlsplit(path).path != PATH:
            writer.write(response(404, _json({"code": 404, "message": "not found"})))
            return
        if method != "POST":
            writer.write(response(405, _json({"code": 405, "message": "method not allowed"})))
            return
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        await self._register(writer, label, form)
        await writer.drain()

    async def _register(self, writer, label, form):
        pk, dn = form.get("productKey", ""), form.get("deviceName", "")
        random, sign = form.get("random", ""), form.get("sign", "")
        method = form.get("signMethod", "").lower()
        if not (pk and dn and random and sign) or method not in METHODS:
            log.info("%s https %s/%s: 460 (missing or bad parameters)", label, pk or "?", dn or "?")
            writer.write(response(200, _json({"code": 460, "message": "request parameter error"})))
            return
        store = self.app.store
        fault = faults.lookup(store.read(), pk, dn, "https")
        if fault.get("refuse") is not None:
            self._consume(fault)
            log.info("%s https %s/%s: %d (fault)", label, pk, dn, fault.get("refuse"))
            writer.write(response(200, _json({"code": fault.get("refuse"), "message": "refused by fault"})))
            return
        if fault.rate and not self.app.limiter.allow(*fault.rate):
            log.info("%s https %s/%s: 503 (rate limit)", label, pk, dn)
            writer.write(response(200, _json({"code": 503, "message": "server unavailable"})))
            return
        issue = not (fault.get("after") or fault.payload is not None or fault.get("huge"))
        with store.edit() as data:
            prod = data["products"].get(pk)
            dev = data["devices"].get(registry.device_key(pk, dn))
            if prod is None:
                code, reason = auth.BAD_CREDENTIALS, "unknown product"
            else:
                code, reason = auth.check_registration("https", prod, dev, pk, dn, random, method, sign)
            if code == auth.ACCEPTED:
                faults.consume(data, fault.keys)
                secret = registry.issue_secret(data, pk, dn) if issue else ""
        if code:
            json_code, message = _REASONS.get(reason, (6401, reason))
            log.info("%s https %s/%s: %d (%s)", label, pk, dn, json_code, reason)
            writer.write(response(200, _json({"code": json_code, "message": message})))
            return
        log.info("%s https %s/%s: 200%s", label, pk, dn,
                 " (faults: %s)" % ",".join(sorted(fault.fields)) if fault else "")
        after = fault.get("after")
        if after == "close":
            return
        if after == "quiet":
            await asyncio.sleep(self.app.register_linger)
            return
        if fault.get("delay_ms"):
            await asyncio.sleep(fault.get("delay_ms") / 1000)
        body = fault.payload
        if body is None:
            body = _json({"code": 200, "data": {"productKey": pk, "deviceName": dn, "deviceSecret": secret},
                          "message": "success"})
        if fault.get("huge"):
            writer.write(response(200, body[:16], content_length=faults.HUGE_LENGTH))
        else:
            writer.write(response(200, body))

    def _consume(self, fault):
        if fault.keys:
            with self.app.store.edit() as data:
                faults.consume(data, fault.keys)

