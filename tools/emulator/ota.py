"""The OTA console: a task per device, pushed on /ota/device/upgrade or answered on firmware/get_reply, and
the file served on the HTTPS port under an expiring URL with Range.

State lives in registry.json under "ota" ({"PK/DN": task}), so the `ota push`/`ota status` subcommands and
the running emulator share it like the other subcommands do. The package file is copied into the state dir.

Task fields: id, version, module, sign_method, size, md5, sha256, sign (what the push says: a wrong-digest
fault makes it differ), token, expires (unix time), state (queued -> pushed -> downloading -> done | failed),
pushes, gets, requests (the Range start of every GET), faults: cut_at (byte offsets, each cut once unless
cut_always), expired, slow_bps. What each device reports (steps, versions) is kept under "ota_seen", task or
not; "at" holds [unix time, what] of each.

Protocol (help.aliyun.com "OTA update"; C Link SDK components/ota; AliOS-Things uOTA ota_transport_mqtt.c):
  push   {"code":"1000","data":{"size","version","isDiff":0,"url","md5","sign","signMethod","module"?,
          "extData":{}},"id","message":"success"}
  get    /sys/{pk}/{dn}/thing/ota/firmware/get -> ..._reply {"code":200,"data":{...as push, or {}},"id"}
  inform /ota/device/inform/{pk}/{dn} {"id","params":{"version","module"?}}: the task is done when it
         names the task's version
  progress /ota/device/progress/{pk}/{dn} {"id","params":{"step","desc","module"?}}; step < 0: failed
"""

import asyncio
import hashlib
import json
import logging
import os
import secrets
import shutil
import time

from . import registry
from .registry import RegistryError

log = logging.getLogger("emulator")

URL_TTL_S = 3600
_CHUNK = 4096
_KEEP_STEPS = 40


def _files_dir(state_dir):
    return os.path.join(state_dir, "ota")


def create(store, pk, dn, path, version, sign_method="MD5", module=None, cut_at=(), cut_always=False,
           wrong_digest=False, expired=False, slow_bps=None, ttl_s=URL_TTL_S):
    """Make (or replace) PK/DN's task for the file at path; returns the task."""
    if sign_method not in ("MD5", "SHA256"):
        raise RegistryError("--sign-method must be MD5 or SHA256")
    if not version or len(version) > 64:
        raise RegistryError("--version must be 1 to 64 characters")
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise RegistryError("cannot read %s: %s" % (path, e)) from e
    if not data:
        raise RegistryError("%s is empty" % path)
    md5 = hashlib.md5(data).hexdigest()
    sha = hashlib.sha256(data).hexdigest()
    sign = md5 if sign_method == "MD5" else sha
    if wrong_digest:
        sign = ("0" if sign[0] != "0" else "1") + sign[1:]
    token = secrets.token_hex(12)
    os.makedirs(_files_dir(store.dir), mode=0o700, exist_ok=True)
    shutil.copyfile(path, os.path.join(_files_dir(store.dir), token))
    key = registry.device_key(pk, dn)
    task = {"id": str(int(time.time() * 1000) % 10**9), "version": version, "module": module,
            "sign_method": sign_method, "size": len(data), "md5": md5, "sha256": sha,
            "sign": sign, "token": token,
            "expires": time.time() + ttl_s, "state": "queued", "pushes": 0, "gets": 0, "requests": [],
            "faults": {"cut_at": sorted(cut_at or ()), "cut_always": cut_always, "expired": expired,
                       "slow_bps": slow_bps}}
    if wrong_digest and sign_method == "MD5":
        task["md5_pushed"] = sign
    with store.edit() as reg:
        if key not in reg["devices"]:
            raise RegistryError("unknown device %s" % key)
        reg.setdefault("ota", {})[key] = task
    return task


def push_body(task, url):
    d = {"size": task["size"], "version": task["version"], "isDiff": 0, "url": url,
         "md5": task.get("md5_pushed", task["md5"]), "sign": task["sign"],
         "signMethod": "Md5" if task["sign_method"] == "MD5" else "SHA256", "extData": {}}
    if task.get("module"):
        d["module"] = task["module"]
    return d


def status(store, pk, dn):
    """The task (state, last progress step, ...) and what the device reported, task or not."""
    key = registry.device_key(pk, dn)
    reg = store.read()
    task = reg.get("ota", {}).get(key)
    seen = reg.get("ota_seen", {}).get(key)
    if task is None and seen is None:
        raise RegistryError("no OTA task for %s/%s and nothing reported" % (pk, dn))
    out = {"task": None}
    if task is not None:
        out["task"] = {k: task[k] for k in ("version", "module", "sign_method", "size", "md5", "sha256",
                                            "pushes", "gets", "requests")}
        out["state"] = task["state"]
    seen = seen or {"versions": [], "steps": []}
    out["versions"] = seen["versions"]
    out["steps"] = seen["steps"]
    out["step"] = seen["steps"][-1][0] if seen["steps"] else None
    out["desc"] = seen["steps"][-1][1] if seen["steps"] else None
    return out


class Ota:
    """The running emulator's side: pushes, firmware/get replies, informs, progress, the file over HTTPS."""

    def __init__(self, app):
        self.app = app

    def url(self, task):
        host = "localhost" if self.app.host in ("127.0.0.1", "0.0.0.0") else self.app.host
        return "https://%s:%d/ota/%s/package.bin?expires=%d" % (host, self.app.ports["https"], task["token"],
                                                                int(task["expires"]))

    async def deliver(self, live):
        """Push queued tasks to devices that are online (the device also asks with firmware/get)."""
        tasks = self.app.store.read().get("ota", {})
        due = [k for k, t in tasks.items() if t["state"] == "queued" and k in live]
        for key in due:
            with self.app.store.edit() as reg:
                task = reg.get("ota", {}).get(key)
                if task is None or task["state"] != "queued":
                    continue
                task["state"] = "pushed"
                task["pushes"] += 1
                body = {"code": "1000", "data": push_body(task, self.url(task)), "id": task["id"],
                        "message": "success"}
            pk, dn = key.split("/", 1)
            log.info("%s: ota task %s pushed", key, task["version"])
            await self.app.broker.internal_message_broadcast(
                "/ota/device/upgrade/%s/%s" % (pk, dn), json.dumps(body).encode(), 0)

    def on_publish(self, pk, dn, topic, body):
        """A device's publish on an OTA topic: the reply to send as (topic, bytes), or None."""
        key = registry.device_key(pk, dn)
        if topic == "/sys/%s/%s/thing/ota/firmware/get" % (pk, dn):
            with self.app.store.edit() as reg:
                task = reg.get("ota", {}).get(key)
                data = {}
                if task is not None and task["state"] in ("queued", "pushed", "downloading"):
                    task["gets"] += 1
                    task["state"] = "pushed"
                    data = push_body(task, self.url(task))
            mid = body.get("id") if isinstance(body, dict) else None
            reply = {"code": 200, "data": data, "id": mid, "message": "success"}
            return topic + "_reply", json.dumps(reply).encode()
        params = body.get("params") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            return None
        if topic == "/ota/device/inform/%s/%s" % (pk, dn):
            version = params.get("version")
            log.info("%s: ota inform version %s", key, version)
            with self.app.store.edit() as reg:
                task = reg.get("ota", {}).get(key)
                seen = _seen(reg, key)
                seen["versions"] = (seen["versions"] + [version])[-_KEEP_STEPS:]
                seen["at"] = (seen.get("at", []) + [[time.time(), "inform: version %s" % version]]
                              )[-_KEEP_STEPS:]
                if task is not None and version == task["version"]:
                    task["state"] = "done"
        elif topic == "/ota/device/progress/%s/%s" % (pk, dn):
            step, desc = params.get("step"), params.get("desc")
            log.info("%s: ota progress %s %s", key, step, desc)
            with self.app.store.edit() as reg:
                task = reg.get("ota", {}).get(key)
                seen = _seen(reg, key)
                seen["steps"] = (seen["steps"] + [[step, desc]])[-_KEEP_STEPS:]
                seen["at"] = (seen.get("at", []) + [[time.time(), "progress: step %s %s" % (step, desc)]]
                              )[-_KEEP_STEPS:]
                if task is not None:
                    try:
                        n = int(step)
                    except (TypeError, ValueError):
                        n = 0
                    if n < 0:
                        task["state"] = "failed"
                    elif task["state"] != "done":
                        task["state"] = "downloading" if n < 100 else "installed"
        return None

    # ---- HTTPS

    async def serve_get(self, writer, path, headers, label):
        """GET /ota/<token>/...: the file, with Range (206) and the faults."""
        parts = path.split("?", 1)[0].split("/")
        token = parts[2] if len(parts) > 2 else ""
        store = self.app.store
        key = task = None
        for k, t in store.read().get("ota", {}).items():
            if t["token"] == token:
                key, task = k, t
        if task is None:
            writer.write(_resp(404, b"no such package"))
            return
        f = task["faults"]
        start = 0
        rng = headers.get("range", "")
        if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = int(rng[6:].split("-")[0])
        with store.edit() as reg:
            t = reg["ota"].get(key)
            if t is not None:
                t["requests"] = (t["requests"] + [start])[-_KEEP_STEPS:]
        if f.get("expired") or time.time() > task["expires"]:
            log.info("%s %s: ota download refused: URL expired (403)", label, key)
            writer.write(_resp(403, b"<Error><Code>AccessDenied</Code><Message>expired</Message></Error>"))
            return
        data = open(os.path.join(_files_dir(store.dir), token), "rb").read()
        if start >= len(data):
            writer.write(_resp(416, b""))
            return
        size = len(data)
        if start:
            head = ("HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\n"
                    "Content-Length: %d\r\nContent-Range: bytes %d-%d/%d\r\nConnection: close\r\n\r\n"
                    % (size - start, start, size - 1, size))
        else:
            head = ("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                    "Accept-Ranges: bytes\r\nConnection: close\r\n\r\n" % size)
        writer.write(head.encode())
        end = size
        cuts = [c for c in f.get("cut_at") or () if c > start]
        if cuts:
            end = cuts[0]
            if not f.get("cut_always"):  # each cut once
                with store.edit() as reg:
                    reg["ota"][key]["faults"]["cut_at"].remove(end)
        log.info("%s %s: ota download bytes %d-%d of %d%s", label, key, start, end, size,
                 " (cut)" if end < size else "")
        pos = start
        bps = f.get("slow_bps")
        while pos < end:
            n = min(_CHUNK if not bps else max(1, bps // 10), end - pos)
            writer.write(data[pos:pos + n])
            await writer.drain()
            pos += n
            if bps:
                await asyncio.sleep(n / bps)
        await writer.drain()
        if end < size:  # the cut: the connection dropped without close_notify
            transport = writer.transport
            transport.abort()


def _seen(reg, key):
    return reg.setdefault("ota_seen", {}).setdefault(key, {"versions": [], "steps": []})


def _resp(status, body):
    reason = {403: "Forbidden", 404: "Not Found", 416: "Range Not Satisfiable"}.get(status, "Error")
    return ("HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (status, reason, len(body))).encode() + body
