# One OTA task (a push on /ota/device/upgrade, or firmware/get's reply),
# loaded for it only: the task checked (what is not supported is refused with
# -1 and a reason), the bundle downloaded over verified HTTPS into ota/dl
# through one fixed buffer, hashed as it arrives (MD5 or SHA-256, the task's
# signMethod), resumed with Range after a cut; then unpacked into the slot
# beside the running bundle, each file checked against the bundle's header,
# and switched to by one rename of ota/state (boot.py reads it). Then a reset:
# the new bundle boots on trial (README: OTA).
#
# The MQTT session is closed for the download: one TLS session at a time, so
# an update needs no more of the IDF heap than a connection does. The result
# of a failed task is kept in ota/report and reported once online again.
import hashlib
import json
import os
import time
from binascii import hexlify

from micropython import const

from aliyun_iot import IotError, backoff_ms, forget, log, sleep_ms

STATE = "ota/state"
REPORT = "ota/report"  # a result to report once online: {"step": -2, "desc": "...", "module": ...}

_DL = "ota/dl"
_BUF = const(1024)  # the one buffer of the download and of the unpacking
_MAX_HEAD = const(1024)  # HTTP response headers
_MAX_INDEX = const(4096)  # the bundle's header line
_MAX_URL = const(1024)
_TRIES = const(6)  # connections per download (a cut is resumed with Range)
MAGIC = b"ALYB1\n"


class Fail(Exception):
    """The task failed: step -1..-4 and a desc, reported on the progress topic."""


def read(path):
    """A small JSON file, or None (missing or unreadable)."""
    try:
        with open(path) as f:
            return json.loads(f.read(512))
    except (OSError, ValueError):
        return None


def write(path, d):
    """Replace a small JSON file atomically (littlefs: rename over an existing file is atomic)."""
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(d))
    os.rename(path + ".tmp", path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def running(st=None):
    """The running bundle's version (the factory layout: the package's)."""
    st = read(STATE) if st is None else st
    if st and st.get("cur"):
        return st.get("ver") or "?"
    from aliyun_iot import __version__

    return __version__


def progress(s, step, desc="", module=None):
    p = {"step": str(step), "desc": desc}
    if module:
        p["module"] = module
    s.publish(b"/ota/device/progress" + s.topic[4:-7], json.dumps({"id": "1", "params": p}))


def run(s, d, st):
    """From ota.py: a task d, or (d None) after a connection, the last update's outcome to report."""
    if d:
        return handle(s, d)
    rep = read(REPORT)
    if "try" in st:  # the new bundle is online: it stays
        del st["try"]
        st.pop("t", None)
        write(STATE, st)
        try:  # boot.py's trial timer (machine.Timer(0) is one object per id: ports/esp32/machine_timer.c)
            import machine

            machine.Timer(0).deinit()
        except (AttributeError, ValueError, OSError):
            pass
        rep = {"step": 100, "desc": "updated"}
        log("ota: %s online, kept" % st.get("ver"))
    if st.get("rb"):
        rep = {"step": -1, "desc": "rolled back: %s did not come online" % st.pop("rb")}
        write(STATE, st)
        log("ota: " + rep["desc"])
    if rep:
        progress(s, rep.get("step"), rep.get("desc") or "", rep.get("module"))
    remove(REPORT)


def _str(d, k, n):
    v = d.get(k)
    return v if isinstance(v, str) and 0 < len(v) <= n else None


def parse(d):
    """The task in a push's data: (task, None) or (None, the reason it is refused)."""
    if d.get("files") is not None:
        return None, "multi-file tasks not supported"
    if d.get("dProtocol") == "mqtt" or d.get("streamId") is not None:
        return None, "MQTT download not supported"
    if d.get("isDiff") not in (None, 0, "0", False):
        return None, "diff packages not supported"
    mod = d.get("module")
    if mod not in (None, "", "default", "app"):
        if mod == "firmware":
            return None, "MicroPython image updates not supported: the application bundle only"
        return None, "module %s not supported" % (mod if isinstance(mod, str) else "?")
    url = _str(d, "url", _MAX_URL)
    ver = _str(d, "version", 64)
    size = d.get("size")
    if not url or not url.startswith("https://") or not ver or not isinstance(size, int) or size <= 0:
        return None, "task needs url (https), version and size"
    sm = d.get("signMethod")
    sm = sm.upper().replace("-", "") if isinstance(sm, str) else ""
    # Link SDK: with signMethod the digest is "sign"; older pushes carry only "md5".
    dig = _str(d, "sign", 64) if sm else _str(d, "md5", 32)
    if sm not in ("", "MD5", "SHA256"):
        return None, "signMethod %s not supported (MD5, SHA256)" % sm
    sm = sm or "MD5"
    if not dig or len(dig) != (32 if sm == "MD5" else 64):
        return None, "digest missing or not %s hex" % sm
    # digestsign (an RSA signature of the digest) is not checked: no RSA verify in stock firmware.
    return {"url": url, "version": ver, "size": size, "sm": sm, "digest": dig.lower(), "module": mod}, None


def handle(s, d):
    """A task (the data of a push or of firmware/get's reply): run it, or refuse it on the progress topic."""
    task, why = parse(d)
    mod = d.get("module") if isinstance(d.get("module"), str) else None
    if why:
        log("ota: task refused: " + why)
        progress(s, -1, why, mod)
        return
    if task["version"] == running():
        log("ota: %s is running already" % task["version"])
        s.publish(b"/ota/device/inform" + s.topic[4:-7], json.dumps({"id": "1", "params":
                                                                       {"version": task["version"]}}))
        return
    log("ota: task %s, %d bytes, %s" % (task["version"], task["size"], task["sm"]))
    progress(s, 0, "downloading", mod)
    s.close()  # one TLS session at a time (README: OTA); check() reconnects after a failure
    from aliyun_iot import config

    cfg = config.load()
    forget("config")
    try:
        fetch(cfg, task)
        install(task, cfg["ota_trial_boots"], cfg["ota_trial_s"])
    except Fail as e:
        step, desc = e.args
        log("ota: failed %d %s" % (step, desc))
        write(REPORT, {"step": step, "desc": desc, "module": mod})
        return
    log("ota: switched to %s; resetting" % task["version"])
    import machine

    machine.reset()


# ---- the download


def _hash(sm):
    return hashlib.sha256() if sm == "SHA256" else hashlib.md5()


def fetch(cfg, task):
    """Download the task's file into ota/dl (resumed across cuts and resets) and check its digest."""
    url = task["url"][8:]
    i = url.find("/")
    host, path = (url, "/") if i < 0 else (url[:i], url[i:])
    port = 443
    if ":" in host:
        host, port = host.split(":", 1)
        port = int(port) if port.isdigit() else 0
    if not host or not 0 < port < 65536:
        raise Fail(-2, "bad url")
    size = task["size"]
    h = _hash(task["sm"])
    buf = bytearray(_BUF)
    have = 0
    info = read(_DL + ".json")
    if info and info.get("d") == task["digest"]:  # the same file, cut earlier: keep what arrived
        try:
            with open(_DL, "rb") as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    h.update(memoryview(buf)[:k])
                    have += k
                    sleep_ms(0)
        except OSError:
            have = 0
            h = _hash(task["sm"])
    if not have:
        try:
            os.mkdir("ota")
        except OSError:
            pass
        write(_DL + ".json", {"d": task["digest"]})
    if have > size:
        have = 0
        h = _hash(task["sm"])
    # The whole download has one deadline: 2 minutes and a floor of 1 KB/s.
    t_end = time.ticks_add(time.ticks_ms(), 120000 + size)
    tries = 0
    pos = [have]  # bytes in ota/dl (and in the hash), kept by _get as they are written
    f = open(_DL, "ab" if have else "wb")
    try:
        while pos[0] < size:
            try:
                whole = _get(cfg, host, port, path, pos, size, f, h, buf, t_end)
            except IotError as e:
                tries += 1
                f.flush()
                if tries >= _TRIES or time.ticks_diff(t_end, time.ticks_ms()) <= 0:
                    raise Fail(-2, "download cut %d times (%s)" % (tries, e.code))
                log("ota: download cut at %d (%s): resuming" % (pos[0], e.code))
                sleep_ms(backoff_ms(tries - 1, 500, 8000))
                continue
            if whole:  # the server ignored Range: start again
                f.close()
                f = open(_DL, "wb")
                pos[0], h = 0, _hash(task["sm"])
    except OSError as e:
        raise Fail(-4, "flash write failed: %s" % e)
    finally:
        f.close()
    dig = hexlify(h.digest()).decode()
    if dig != task["digest"]:
        remove(_DL)
        remove(_DL + ".json")
        raise Fail(-3, "%s mismatch: got %s" % (task["sm"], dig[:8]))


def _get(cfg, host, port, path, pos, size, f, h, buf, t_end):
    # One GET from byte pos[0], pos[0] kept up to date; True when the server would send the whole file
    # where the rest was asked for. IotError: a cut worth a retry; Fail: not worth one.
    import socket

    from aliyun_iot import tls
    from aliyun_iot.link import Link
    from aliyun_iot.neterr import classify

    raw = socket.socket()
    link = None
    try:
        try:
            addr = socket.getaddrinfo(host, port)[0][-1]
            raw.settimeout(cfg["timeout"])
            raw.connect(addr)
            link = Link(tls.for_host(cfg, host).wrap_socket(raw, server_hostname=host), cfg["timeout"] * 1000,
                        0, raw)
            forget("tls")
            link.write(("GET %s HTTP/1.1\r\nHost: %s\r\nRange: bytes=%d-\r\nConnection: close\r\n\r\n"
                        % (path, host, pos[0])).encode())
        except Exception as e:
            err = classify(e, "ota download")
            if err is None:
                raise
            raise err
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += link.read(1)
            if len(head) > _MAX_HEAD:
                raise Fail(-2, "response headers over %d bytes" % _MAX_HEAD)
        lines = head.split(b"\r\n")
        st = lines[0].split(b" ")
        code = int(st[1]) if len(st) > 1 and st[1].isdigit() else 0
        if code >= 500 or code == 429:
            raise IotError("http %d" % code, "http%d" % code, True)
        if code not in (200, 206):
            raise Fail(-2, "http %d" % code)
        have = pos[0]
        if code == 200 and have:
            return True
        if code == 206:
            cr = b""
            for ln in lines:
                if ln.lower().startswith(b"content-range:"):
                    cr = ln[14:].strip()
            if not cr.startswith(("bytes %d-" % have).encode()):
                raise Fail(-2, "bad Content-Range")
        # The body, through the one buffer: non-blocking reads that wait in poll (link.py says why).
        mv = memoryview(buf)
        link.raw.settimeout(0)
        t = time.ticks_ms()
        while have < size:
            sleep_ms(0)
            try:
                k = link.sock.readinto(mv[: min(_BUF, size - have)])
            except OSError as e:
                raise classify(e, "ota download")
            now = time.ticks_ms()
            if k is None:
                left = min(link.ms - time.ticks_diff(now, t), time.ticks_diff(t_end, now), 1000)
                if left <= 0:
                    raise IotError("download stalled", "timeout", True)
                ev = link.poll.poll(left)
                if ev and ev[0][1] & 0x38:
                    raise IotError("closed", "closed", True)
                continue
            if not k:
                raise IotError("closed", "closed", True)
            f.write(mv[:k])
            h.update(mv[:k])
            have += k
            pos[0] = have
            t = now
        return False
    finally:
        (link or raw).close()
        forget("link", "neterr", "tls")


# ---- the switch


def _rmtree(d):
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        p = d + "/" + n
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(d)


def _mkdirs(path):
    p = ""
    for part in path.split("/")[:-1]:
        p = p + "/" + part if p else part
        try:
            os.mkdir(p)
        except OSError:
            pass


def _name_ok(n):
    # Relative paths under the slot, nothing that climbs out of it.
    return (isinstance(n, str) and 0 < len(n) <= 64 and n[0] != "/" and "\\" not in n
            and ".." not in n.split("/") and "" not in n.split("/"))


def install(task, trials, trial_s=600, src=_DL):
    """Unpack the downloaded bundle into the slot beside the running one, then switch to it."""
    st = read(STATE) or {}
    cur = st.get("cur") or ""
    slot = "b" if cur == "a" else "a"
    if st.get("old") == slot:  # the rollback bundle is about to be replaced: no rollback to it
        st.pop("old", None)
        st.pop("ov", None)
        write(STATE, st)
    d = "ota/" + slot
    buf = bytearray(_BUF)
    mv = memoryview(buf)
    try:
        _rmtree(d)
        os.mkdir(d)
        with open(src, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise Fail(-3, "not a bundle")
            line = f.readline(_MAX_INDEX)
            if not line.endswith(b"\n"):
                raise Fail(-3, "bundle header over %d bytes" % _MAX_INDEX)
            try:
                idx = json.loads(line)
                files = idx["files"]
                ver = idx["version"]
            except (ValueError, KeyError, TypeError):
                raise Fail(-3, "bundle header unreadable")
            if ver != task["version"]:
                raise Fail(-3, "bundle is %s, task %s" % (ver, task["version"]))
            names = []
            for e in files:
                if not (isinstance(e, list) and len(e) == 3 and _name_ok(e[0]) and isinstance(e[1], int)
                        and e[1] >= 0 and isinstance(e[2], str)):
                    raise Fail(-3, "bundle header: bad entry")
                names.append(e[0])
            if "main.py" not in names:
                raise Fail(-3, "bundle has no main.py")
            for name, n, dig in files:
                p = d + "/" + name
                _mkdirs(p)
                h = hashlib.sha256()
                with open(p, "wb") as out:
                    while n:
                        k = f.readinto(mv[: min(n, _BUF)])
                        if not k:
                            raise Fail(-3, "bundle truncated in " + name)
                        out.write(mv[:k])
                        h.update(mv[:k])
                        n -= k
                        sleep_ms(0)
                if hexlify(h.digest()).decode() != dig:
                    raise Fail(-3, "sha256 of %s differs from the header" % name)
            if f.read(1):
                raise Fail(-3, "data after the last file")
        with open(d + "/bundle.json", "wb") as out:
            out.write(line)
        # The switch: one rename. Until it, the running bundle stays; after it, the new one boots on trial.
        write(STATE, {"cur": slot, "ver": ver, "old": cur, "ov": running(st), "try": trials, "t": trial_s})
    except OSError as e:
        raise Fail(-4, "flash write failed: %s" % e)
    finally:
        remove(src)
        remove(src + ".json")
