# The OTA switch (loaded by otajob.py for its turn only): the downloaded bundle
# unpacked into the slot beside the running one, each file checked against
# the bundle's header as it is written, then one rename of ota/state (boot.py
# reads it) makes it the bundle that boots next, on trial.
import hashlib
import json
import os
from binascii import hexlify

from micropython import const

from aliyun_iot import sleep_ms
from aliyun_iot.otajob import STATE, Fail, read, remove, running, write

_DL = "ota/dl"
_BUF = const(1024)  # the one buffer of the unpacking
_MAX_INDEX = const(4096)  # the bundle's header line
MAGIC = b"ALYB1\n"


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
