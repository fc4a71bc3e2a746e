"""The device registry: one JSON file in the state directory, shared by the server and the CLI.

It holds secrets, so it is written mode 0600, atomically (temp file + os.replace), under an flock so the
running server and a `reset`/`fault` subcommand never lose each other's writes. The server re-reads the
file whenever its (inode, mtime, size) changes, so a subcommand takes effect on the next connection.
"""

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import re
import secrets
import string
import time

FILE = "registry.json"
_LOCK = ".registry.lock"
VERSION = 1
_DN_RE = re.compile(r"^[A-Za-z0-9_@.:\-]{4,32}$")
_PK_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_ALNUM = string.ascii_letters + string.digits


class RegistryError(Exception):
    """Bad input to a registry operation (unknown product, malformed name...)."""


def valid_dn(dn):
    return isinstance(dn, str) and bool(_DN_RE.match(dn))


def valid_pk(pk):
    return isinstance(pk, str) and bool(_PK_RE.match(pk))


def fingerprint(value):
    """First 4 hex of SHA-256: how logs and `show` refer to a secret without revealing it."""
    return hashlib.sha256(value.encode()).hexdigest()[:4]


def random_text(n):
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def empty():
    return {"version": VERSION, "products": {}, "devices": {}, "faults": {}}


def device_key(pk, dn):
    return pk + "/" + dn


class Store:
    """registry.json in `state_dir`: cached reads, locked read-modify-write edits."""

    def __init__(self, state_dir):
        self.dir = os.fspath(state_dir)
        self.path = os.path.join(self.dir, FILE)
        self._lock_path = os.path.join(self.dir, _LOCK)
        self._stat = None
        self._data = empty()

    def _sig(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return empty()
        except (OSError, ValueError) as e:
            raise RegistryError("cannot read %s: %s" % (self.path, e)) from e
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise RegistryError("%s: unknown registry format" % self.path)
        for section in ("products", "devices", "faults"):
            data.setdefault(section, {})
        return data

    def read(self):
        """Current registry (a shared dict: do not mutate; use edit())."""
        sig = self._sig()
        if sig != self._stat or sig is None:
            self._data = self._load()
            self._stat = sig
        return self._data

    @contextlib.contextmanager
    def edit(self):
        """Locked read-modify-write; the dict yielded is written back when the block ends cleanly."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._load()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                self._write(data)
            self._data = data
            self._stat = self._sig()
        finally:
            os.close(fd)

    def _write(self, data):
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


# ---- operations on a registry dict (inside Store.edit()) ----

def put_product(data, pk, ps=None, dynreg=None, regnwl=None):
    if not valid_pk(pk):
        raise RegistryError("bad ProductKey %r" % pk)
    prod = data["products"].get(pk)
    if prod is None:
        if not ps:
            raise RegistryError("product %s is new: its ProductSecret is needed (PK=PS)" % pk)
        prod = data["products"][pk] = {"ps": ps, "dynreg": True, "regnwl": False}
    if ps:
        prod["ps"] = ps
    if dynreg is not None:
        prod["dynreg"] = bool(dynreg)
    if regnwl is not None:
        prod["regnwl"] = bool(regnwl)
    return prod


def put_device(data, pk, dn, secret=None, prereg=True):
    """Add a device (the console's 'add device'); an existing one is kept as it is unless secret is given."""
    if pk not in data["products"]:
        raise RegistryError("unknown product %s (add it with --product %s=PS)" % (pk, pk))
    if not valid_dn(dn):
        raise RegistryError("bad DeviceName %r: 4 to 32 of letters, digits and -_@.:" % dn)
    dev = data["devices"].get(device_key(pk, dn))
    if dev is None:
        dev = data["devices"][device_key(pk, dn)] = {
            "pk": pk, "dn": dn, "prereg": bool(prereg), "secret": None, "client_id": None, "token": None,
            "activated": False, "activated_at": None, "issued_at": None, "registrations": 0,
        }
    if secret:
        dev["secret"] = secret
    return dev


def issue_secret(data, pk, dn):
    """A new DeviceSecret for a registration: it replaces any earlier one (the last one wins)."""
    dev = data["devices"][device_key(pk, dn)]
    dev["secret"] = random_text(32)
    dev["issued_at"] = time.time()
    dev["registrations"] += 1
    return dev["secret"]


def issue_token(data, pk, dn):
    """regnwl: create the device if needed, then a new (clientId, deviceToken) pair (the last one wins)."""
    dev = put_device(data, pk, dn, prereg=False)
    dev["client_id"] = "%s.%s.%s" % (pk, dn, random_text(8))
    dev["token"] = random_text(32)
    dev["issued_at"] = time.time()
    dev["registrations"] += 1
    return dev["client_id"], dev["token"]


def activate(data, pk, dn):
    dev = data["devices"].get(device_key(pk, dn))
    if dev is not None and not dev["activated"]:
        dev["activated"] = True
        dev["activated_at"] = time.time()


def reset(data, pk, dn):
    """ResetThing: back to inactive so that it can register again."""
    dev = data["devices"].get(device_key(pk, dn))
    if dev is None:
        raise RegistryError("unknown device %s/%s" % (pk, dn))
    dev["activated"] = False
    dev["activated_at"] = None


def redacted(data):
    """The registry with every secret replaced by its length and fingerprint (for `show`)."""
    out = copy.deepcopy(data)
    for prod in out["products"].values():
        prod["ps"] = _mask(prod.get("ps"))
    for dev in out["devices"].values():
        for name in ("secret", "token"):
            dev[name] = _mask(dev.get(name))
    return out


def _mask(value):
    if not value:
        return None
    return "<%d chars sha256:%s>" % (len(value), fingerprint(value))
