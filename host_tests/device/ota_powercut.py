# Power-cut sweep over an OTA update on littlefs (MicroPython unix port; argv[1]: firmware/boot.py).
#
# The flash device of powercut.py (a RAM littlefs that loses power after its N-th program/erase, the op
# cut either not done or half done): for every N across the download's writes (ota/dl, as fetch writes it),
# the unpacking and the switch (otainst.install), and across the loader's own state writes (a trial boot,
# a rollback), the flash is powered on again from what survived, boot.py picks a bundle, and:
#   - it is one of the two (the one running before, or the new one),
#   - what it picked is complete (every file of its header present with its SHA-256; the factory main.py),
#   - config.json and the credential are byte-identical,
#   - the same update then goes through (a leftover never blocks the next one).
# Prints: CUTS <scenario> <mode> checked=<n> ops=<n>.
import hashlib
import json
import os
import sys
from binascii import hexlify

import devkit

vfs = devkit.require_lfs2()

from lfscut import PowerCutDev, power_off, power_on  # noqa: E402

from aliyun_iot import otainst, otajob  # noqa: E402

_BLOCK = 4096
_BLOCKS = 40
_MOUNT = "/flash"
LOADER = open(sys.argv[1]).read()
CONFIG = b'{"product_key": "a1TestPk001", "product_secret": "x"}'
CRED = b'{"v": 1, "kind": "secret", "pk": "a1TestPk001", "dn": "dev-1", "ds": "s", "chk": "0"}\n'


def put(path, data):
    with open(path, "wb") as f:
        f.write(data)


def get(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def sha(b):
    return hexlify(hashlib.sha256(b).digest()).decode()


def bundle(version, n):
    # main.py and two modules, spread over several blocks
    files = [("main.py", ("# app %s\n" % version).encode() * 40),
             ("aliyun_iot/__init__.py", ("V = %r\n" % version).encode() * 600),
             ("aliyun_iot/extra.py", bytes((i * n) & 0xFF for i in range(5000)))]
    head = json.dumps({"version": version, "files": [[p, len(b), sha(b)] for p, b in files]})
    return otainst.MAGIC + head.encode() + b"\n" + b"".join(b for _, b in files)


def loader():
    """boot.py on the mounted flash: the bundle it picks ("" for the factory layout)."""
    path = list(sys.path)
    exec(LOADER, {"__name__": "boot"})
    picked = os.getcwd()[len(_MOUNT) + 1 :]
    os.chdir(_MOUNT)
    sys.path[:] = path
    return picked


def complete(picked):
    """None when the picked layout is whole, else what is wrong."""
    if not picked:
        return None if get("main.py") == b"# factory\n" else "factory main.py damaged"
    line = get(picked + "/bundle.json")
    if line is None:
        return "%s has no bundle.json" % picked
    for p, n, h in json.loads(line)["files"]:
        b = get(picked + "/" + p)
        if b is None or len(b) != n or sha(b) != h:
            return "%s/%s missing or damaged" % (picked, p)
    return None


def update(data_file, version):
    # the download's writes, as fetch makes them (1 KB at a time), then the unpacking and the switch
    with open("ota/dl", "wb") as f:
        for i in range(0, len(data_file), 1024):
            f.write(data_file[i : i + 1024])
    otainst.install({"version": version}, 2)


def check_after(data, allowed, redo):
    try:
        dev = power_on(data)
    except OSError as e:
        return "filesystem does not mount: %r" % (e.args,)
    try:
        try:
            picked = loader()
        except Exception as e:  # noqa: BLE001 - any exception here is the failure
            return "loader raised %r" % (e,)
        if picked not in allowed:
            return "loader picked %r, want one of %r" % (picked, allowed)
        why = complete(picked)
        if why:
            return why
        if get("config.json") != CONFIG or get("aliyun_iot.cred") != CRED:
            return "config.json or the credential changed"
        if redo:
            try:
                redo()
            except Exception as e:  # noqa: BLE001
                return "the update after power-up failed: %r" % (e,)
            st = json.loads(get("ota/state"))
            if complete("ota/" + st["cur"]):
                return "the update after power-up left an incomplete bundle"
        return None
    finally:
        power_off(dev)


_WORK = bytearray(_BLOCK * _BLOCKS)  # the flash of every power-on of a sweep: one buffer, copied into


def sweep(name, base, action, allowed, redo=None):
    data = _WORK
    data[:] = base
    dev = power_on(data)
    action()
    power_off(dev)
    ops = dev.ops
    devkit.info("%s: %d program/erase ops" % (name, ops))
    for mode in ("clean", "torn"):
        bad = checked = 0
        for n in range(ops):
            data[:] = base
            dev = power_on(data, n, mode == "torn")
            try:
                action()
            except (OSError, otajob.Fail):
                pass
            power_off(dev)
            why = None if dev.dead else "finished before the cut"
            why = why or check_after(data, allowed, redo)
            if why:
                bad += 1
                if bad <= 3:
                    devkit.fail("%s %s cut %d" % (name, mode, n), why)
            checked += 1
        print("CUTS %s %s checked=%d ops=%d" % (name, mode, checked, ops))
        devkit.check("%s %s" % (name, mode), bad == 0 and checked == ops > 0, "%d bad cut points" % bad)


def main():
    data = bytearray(_BLOCK * _BLOCKS)
    vfs.VfsLfs2.mkfs(PowerCutDev(data, _BLOCK))
    dev = power_on(data)
    put("main.py", b"# factory\n")
    put("config.json", CONFIG)
    put("aliyun_iot.cred", CRED)
    os.mkdir("ota")
    power_off(dev)
    factory = bytes(data)
    b2, b3 = bundle("2", 3), bundle("3", 5)

    # factory -> bundle 2 in ota/a
    sweep("first", factory, lambda: update(b2, "2"), ("", "ota/a"), lambda: update(b2, "2"))

    # bundle 2 running (kept) -> bundle 3 in ota/b, 2 stays the rollback
    data = bytearray(factory)
    dev = power_on(data)
    update(b2, "2")
    st = json.loads(get("ota/state"))
    del st["try"]
    otajob.write("ota/state", st)
    power_off(dev)
    running2 = bytes(data)
    sweep("second", running2, lambda: update(b3, "3"), ("ota/a", "ota/b"), lambda: update(b3, "3"))

    # bundle 3 running (kept, 2 the rollback) -> bundle 4 into ota/a, over the rollback bundle
    data = bytearray(running2)
    dev = power_on(data)
    update(b3, "3")
    st = json.loads(get("ota/state"))
    trial3 = dict(st)
    del st["try"]
    otajob.write("ota/state", st)
    power_off(dev)
    b4 = bundle("4", 7)
    sweep("third", bytes(data), lambda: update(b4, "4"), ("ota/b", "ota/a"), lambda: update(b4, "4"))

    # bundle 3 on trial with no boot left: the loader's rollback write
    data = bytearray(running2)
    dev = power_on(data)
    update(b3, "3")
    trial3["try"] = 0
    otajob.write("ota/state", trial3)
    power_off(dev)
    sweep("rollback", bytes(data), loader, ("ota/a", "ota/b"))


main()
sys.exit(0)
