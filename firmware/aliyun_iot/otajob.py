# One OTA task (a push on /ota/device/upgrade, or firmware/get's reply),
# loaded for it only: the task checked (what is not supported is refused with
# -1 and a reason); the bundle downloaded (otadl.py), unpacked beside the
# running bundle and switched to (otainst.py), each stage loaded for its turn
# only; then a reset: the new bundle boots on trial (README: OTA). Also what
# follows a connection when there is news: a failure or a rollback reported,
# a bundle on trial kept.
#
# The MQTT session is closed for the download: one TLS session at a time, so
# an update needs no more of the IDF heap than a connection does. The result
# of a failed task is kept in ota/report and reported once online again.
import json
import os

from micropython import const

from aliyun_iot import _stage, forget, log

STATE = "ota/state"
REPORT = "ota/report"  # a result to report once online: {"step": -2, "desc": "...", "module": ...}

_DL = "ota/dl"
_SKIP = "ota/skip"  # {"d": digest} of a task that ran out of RAM: refused once, not retried in a loop
_MAX_URL = const(1024)


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


def _int(d, k, default, lo, hi):
    v = d.get(k)
    return v if isinstance(v, int) and lo <= v <= hi else default


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
    try:  # the switch needs boot.py to be the loader (tools/deploy writes it; mip does not)
        with open("boot.py", "rb") as f:
            loader = b"the OTA loader" in f.readline(120)
    except OSError:
        loader = False
    if not loader:
        progress(s, -1, "boot.py is not the OTA loader: deploy it first", mod)
        return
    if task["version"] == running():
        log("ota: %s is running already" % task["version"])
        s.publish(b"/ota/device/inform" + s.topic[4:-7], json.dumps({"id": "1", "params":
                                                                       {"version": task["version"]}}))
        return
    try:
        os.mkdir("ota")
    except OSError:
        pass  # there already
    if read(_SKIP) == {"d": task["digest"]}:  # this file failed for want of RAM before: not in a loop
        progress(s, -1, "out of RAM before: push it again after a reset", mod)
        remove(_SKIP)
        return
    try:  # room for the download and its unpacked copy (littlefs: whole 4 KB blocks)
        v = os.statvfs(".")
        free = v[0] * v[4]
    except (OSError, AttributeError):
        free = None
    if free is not None and 2 * task["size"] + 32768 > free:
        progress(s, -1, "no room: %d bytes free on the flash" % free, mod)
        return
    log("ota: task %s, %d bytes, %s" % (task["version"], task["size"], task["sm"]))
    progress(s, 0, "downloading", mod)
    s.close()  # one TLS session at a time (README: OTA); check() reconnects after a failure
    try:
        # config.json was checked at boot: only the trial's two keys are read here (config.py costs RAM).
        with open("config.json") as f:
            raw = json.load(f)
        trials = _int(raw, "ota_trial_boots", 3, 1, 20)
        trial_s = _int(raw, "ota_trial_s", 600, 60, 86400)
        raw = None
        forget()  # a collection: the session's link and the config's garbage gone before the download
        _stage("otadl", "fetch", (), s.cfg, task)  # the session's cfg: ca and timeout
        _stage("otainst", "install", (), task, trials, trial_s)
    except Fail as e:
        step, desc = e.args
        log("ota: failed %d %s" % (step, desc))
        write(REPORT, {"step": step, "desc": desc, "module": mod})
        return
    except MemoryError:
        raw = None
        import gc

        gc.collect()
        log("ota: out of RAM")
        write(REPORT, {"step": -1, "desc": "out of RAM", "module": mod})
        write(_SKIP, {"d": task["digest"]})
        return
    log("ota: switched to %s; resetting" % task["version"])
    import machine

    machine.reset()
