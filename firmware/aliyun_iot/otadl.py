# The OTA download (loaded by otajob.py for its turn only): HTTPS GET with the
# package's verifying TLS (tls.for_host: the URL's host checked against the
# roots), streamed into ota/dl through one fixed buffer, hashed as it arrives
# (MD5 or SHA-256, the task's signMethod), resumed with Range after a cut (and
# after a reset: ota/dl.json names the file), one deadline for the whole of it
# and one per wait, the watchdog fed.
import hashlib
import time
from binascii import hexlify

from micropython import const

from aliyun_iot import IotError, backoff_ms, forget, log, sleep_ms
from aliyun_iot.otajob import Fail, read, remove, write

_DL = "ota/dl"
_BUF = const(1024)  # the one buffer of the download
_MAX_HEAD = const(1024)  # HTTP response headers
_TRIES = const(6)  # connections per download (a cut is resumed with Range)


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
    from aliyun_iot import dial
    from aliyun_iot.link import Link

    s = link = None
    try:
        try:
            # TCP, the handshake and the GET within 3 x timeout, every wait fed (dial.opened); the
            # session's context: all the roots, or the ca file, what for_host would parse again.
            ctx = cfg.get("ctx")
            if ctx is None:
                from aliyun_iot import tls

                ctx = tls.for_host(cfg, host)
                forget("tls")
            req = "GET %s HTTP/1.1\r\nHost: %s\r\nRange: bytes=%d-\r\nConnection: close\r\n\r\n"
            s = dial.opened(cfg, host, port, ctx, (req % (path, host, pos[0])).encode())
            ctx = req = None
            link = Link(s.sock, cfg["timeout"] * 1000, 0, s.raw)
        except Exception as e:
            from aliyun_iot.neterr import classify  # imported on a failure only

            err = classify(e, "ota download")
            if err is None:
                raise
            raise err
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += link.read(1)
            if len(head) > _MAX_HEAD:
                raise Fail(-2, "response headers over %d bytes" % _MAX_HEAD)
            if time.ticks_diff(t_end, time.ticks_ms()) <= 0:
                raise IotError("download too slow", "timeout", True)
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
        cr = b""
        for ln in lines:
            ln = ln.lower()
            if ln.startswith(b"content-range:"):
                cr = ln[14:].strip()
            elif ln.startswith(b"transfer-encoding:") and b"chunked" in ln:
                raise Fail(-2, "chunked response not supported")
        if code == 206:
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
                from aliyun_iot.neterr import classify

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
        if s:
            s.close()
        forget("link", "neterr", "tls")
