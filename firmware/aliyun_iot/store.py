# The DeviceSecret (or regnwl token) on the board's littlefs: one small file,
# replaced atomically (write temp, os.rename), read back and checked. A
# corrupt file is an error, never "no credential": after activation a lost
# secret locks the device out until ResetThing.
import hashlib
import json
import os
from binascii import hexlify

from aliyun_iot import IotError

PATH = "aliyun_iot.cred"
# The file's version is 1, it is at most 1024 bytes, each field at most 256 characters. No const() (the
# host tools import this module on CPython) and no other module-level names: each is a qstr, for good.
_FIELDS = {"secret": ("ds",), "token": ("cid", "tok")}


def _check(cred):
    kind = cred.get("kind")
    names = _FIELDS.get(kind)
    if names is None:
        raise IotError("credential kind must be secret or token, got %r" % (kind,), "corrupt")
    parts = [str(1), kind]  # the version: a one-character string constant would be a qstr
    for k in ("pk", "dn") + names:
        v = cred.get(k)
        if not isinstance(v, str) or not 0 < len(v) <= 256:
            raise IotError("credential field %s missing or invalid" % k, "corrupt")
        parts.append(v)
    return hexlify(hashlib.sha256("\n".join(parts).encode()).digest()).decode()[:16]


def encode(cred):
    """Bytes of the credential file for cred (a dict: kind, pk, dn and ds, or cid and tok)."""
    d = {"v": 1, "kind": cred["kind"], "pk": cred["pk"], "dn": cred["dn"]}
    for k in _FIELDS.get(cred["kind"], ()):
        d[k] = cred[k]
    d["chk"] = _check(cred)
    return json.dumps(d).encode() + b"\n"


def decode(data):
    """The credential dict in data; IotError('corrupt', "storage") if it is damaged in any way."""
    try:
        d = json.loads(data)
    except ValueError:
        raise IotError("credential file is corrupt (not JSON)", "corrupt")
    if not isinstance(d, dict) or d.get("v") != 1:
        raise IotError("credential file is corrupt or of an unknown version", "corrupt")
    cred = {"kind": d.get("kind"), "pk": d.get("pk"), "dn": d.get("dn")}
    for k in _FIELDS.get(d.get("kind"), ()):
        cred[k] = d.get(k)
    if d.get("chk") != _check(cred):
        raise IotError("credential file is corrupt (check value mismatch)", "corrupt")
    return cred


def load(path=PATH):
    """The stored credential, or None when none is stored. Raises StorageError if it is corrupt."""
    try:
        f = open(path, "rb")
    except OSError as e:
        if e.args[0] == 2:  # ENOENT
            return None
        raise IotError("cannot open %s: %s" % (path, e), "io")
    try:
        size = f.seek(0, 2)  # read what is there: a buffer of the largest would be allocated up front
        f.seek(0)
        data = f.read(min(size, 1025))
    finally:
        f.close()
    if len(data) > 1024:
        raise IotError("credential file is corrupt (too large)", "corrupt")
    return decode(data)


def save(cred, path=PATH, overwrite=False):
    """Store cred atomically. An existing, different credential is replaced only if overwrite is True."""
    data = encode(cred)
    if not overwrite:
        old = load(path)  # a corrupt file raises: never silently replaced
        if old == cred:
            return
        if old is not None:
            raise IotError("a credential for %s/%s is already stored; refusing to replace it without "
                           "overwrite" % (old["pk"], old["dn"]), "exists")
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            n = f.write(data)
        if n != len(data):
            raise OSError(28)  # ENOSPC
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if e.args[0] == 28:
            raise IotError("flash is full: credential not written, previous state kept", "full")
        raise IotError("writing the credential failed: %s" % e, "io")
    if load(path) != cred:
        raise IotError("credential read back differs from what was written", "verify")
