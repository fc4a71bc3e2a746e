# Power-cut sweep over a credential write on littlefs (MicroPython unix port).
#
# A RAM block device (extended interface: offsets and an erase ioctl, like the
# ESP32's flash) loses power after its N-th program/erase: the op that is cut
# either does nothing ("clean") or writes half of its data ("torn"), raises
# OSError, and every later write is dropped. For every N across one
# aliyun_iot.store.save(), the flash is remounted from what survived and
# store.load() must return the old state or the whole new credential: never a
# mix, never "corrupt", never None when a credential was stored before.
# A save after the cut must then work (a leftover temp file must not block it).
#
# Prints: CUTS <scenario> <mode> checked=<n> ops=<n>, where ops is the number of
# program/erase operations of an uninterrupted save.
import hashlib
import sys
from binascii import hexlify

import devkit

vfs = devkit.require_lfs2()

from lfscut import PowerCutDev, power_off, power_on  # noqa: E402

from aliyun_iot import IotError, store  # noqa: E402

_BLOCK = 4096  # the ESP32's flash sector
_BLOCKS = 32
_MAX_AGE = 400


def describe(cred):
    # never print a secret, even a test one: kind, names, and 4 hex of a hash
    if cred is None:
        return "None"
    s = cred.get("ds") or cred.get("tok") or ""
    h = hexlify(hashlib.sha256(s.encode()).digest())[:4]
    return "%s %s/%s #%s" % (cred.get("kind"), cred.get("pk"), cred.get("dn"), h)


def save(cred):
    store.save(cred, overwrite=True)


def check_cut(data, new, allowed):
    """Power on after a cut: the problem found, or None."""
    try:
        dev = power_on(data)
    except OSError as e:
        return "filesystem does not mount: %r" % (e.args,)
    try:
        try:
            got = store.load()
        except Exception as e:  # noqa: BLE001 - any exception here is the failure
            return "load raised %s %r" % (type(e).__name__, e.args)
        if got not in allowed:
            return "load returned %s" % describe(got)
        try:
            save(new)
            if store.load() != new:
                return "save after power-up read back something else"
        except (OSError, IotError) as e:
            return "save after power-up failed: %r" % (e.args,)
        return None
    finally:
        power_off(dev)


def sweep(name, base, new, allowed):
    """Cut power at every op of save(new) on flash image `base`; print the count."""
    data = bytearray(base)
    dev = power_on(data)
    save(new)
    power_off(dev)
    ops = dev.ops
    devkit.info("%s: a clean save takes %d program/erase ops (%d erases)" % (name, ops, dev.erases))
    for mode in ("clean", "torn"):
        checked = 0
        bad = 0
        for n in range(ops):
            data = bytearray(base)
            dev = power_on(data, n, mode == "torn")
            try:
                save(new)
            except (OSError, IotError):
                pass
            power_off(dev)
            why = None
            if not dev.dead or dev.ops <= n:
                why = "save completed before the cut: the run is not deterministic"
            why = why or check_cut(data, new, allowed)
            if why:
                devkit.fail("%s %s cut %d" % (name, mode, n), why)
                bad += 1
            checked += 1
        print("CUTS %s %s checked=%d ops=%d" % (name, mode, checked, ops))
        devkit.check("%s %s" % (name, mode), bad == 0 and checked == ops > 0, "%d bad cut points" % bad)


def main():
    pk, dn = "a1TestPk001", "esp32-240ac4000001"
    old = {"kind": "secret", "pk": pk, "dn": dn, "ds": "OLDsecretOLDsecretOLDsecret0001"}
    new = {"kind": "secret", "pk": pk, "dn": dn, "ds": "NEWsecretNEWsecretNEWsecret0002"}
    tok = {"kind": "token", "pk": pk, "dn": dn, "cid": "cid.0001", "tok": "T" * 40}

    data = bytearray(_BLOCK * _BLOCKS)
    vfs.VfsLfs2.mkfs(PowerCutDev(data, _BLOCK))
    empty = bytes(data)
    dev = power_on(data)
    store.save(old)
    ok = store.load() == old
    power_off(dev)
    devkit.check("store old credential", ok, "load after save differs")
    with_old = bytes(data)

    # re-registration: an existing secret replaced by a new one
    sweep("overwrite", with_old, new, (old, new))
    # first registration: nothing stored before (None is the old state here)
    sweep("first", empty, tok, (None, tok))

    # an aged filesystem whose next save compacts the root directory's metadata
    # pair (blocks 0 and 1): the riskiest moment. Age it by saving until it happens.
    data = bytearray(with_old)
    for i in range(_MAX_AGE):
        aged = bytes(data)
        cred = new if i % 2 == 0 else old
        dev = power_on(data)
        save(cred)
        power_off(dev)
        if 0 in dev.erased or 1 in dev.erased:
            devkit.info("aged: save %d after the first compacts the root metadata" % (i + 1))
            sweep("compaction", aged, cred, (old, new))
            break
    else:
        devkit.fail("compaction", "no save compacted the metadata in %d saves" % _MAX_AGE)


main()
sys.exit(0)
