"""FakeBoard: the surface of tools.board.Board that the board tools use, over a dict of files, so that
their decisions (refuse, back up, name, record) are tested in milliseconds. Also SECRET, a DeviceSecret
look-alike that tests assert never shows, and cred(), a credential record for it."""

import hashlib
from pathlib import Path

from tools import board as B

SECRET = "Zq8sN0tAReal5ecretXyZ12345678901"  # a DeviceSecret look-alike: tests assert it never shows


def cred(pk="a1PK", dn="esp32-240ac4000001", ds=SECRET):
    return {"kind": "secret", "pk": pk, "dn": dn, "ds": ds}


class FakeBoard:
    """The surface of tools.board.Board that the tools use, over a dict of files."""

    def __init__(
        self, port="fake://0", tool=None, timeout=None, mac="240ac4000001", files=None, broken=False
    ):
        self.port = port
        self._mac = mac
        self.files = dict(files or {})
        self.broken = broken
        self.puts = []

    def _check(self):
        if self.broken:
            raise B.ToolError("mpremote on %s failed: could not enter raw repl" % self.port)

    def mac(self):
        self._check()
        return self._mac

    def read_files(self, paths):
        self._check()
        return {p: self.files.get(p) for p in paths}

    def read_file(self, path):
        return self.read_files([path])[path]

    def sha256(self, paths):
        self._check()
        return {p: hashlib.sha256(self.files[p]).hexdigest() for p in paths if p in self.files}

    def put(self, local, remote):
        self._check()
        self.files[remote] = Path(local).read_bytes()
        self.puts.append(remote)
        return hashlib.sha256(self.files[remote]).hexdigest()
