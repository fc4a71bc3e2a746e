# Flash full during a credential write (littlefs on a small RAM block device,
# unix port only): the write fails with IotError "full", leaves no temp
# file, and the credential stored before stays readable and unchanged.
import os

import devkit

vfs = devkit.require_lfs2()

from aliyun_iot import IotError, store

_BS = 512


class RamFlash:
    def __init__(self, blocks):
        self.data = bytearray(blocks * _BS)
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        start = n * _BS + off
        buf[:] = self.data[start : start + len(buf)]

    def writeblocks(self, n, buf, off=None):
        start = n * _BS + (off or 0)
        self.data[start : start + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return _BS
        if op == 6:
            return 0
        return None


dev = RamFlash(24)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), "/full")
os.chdir("/full")
old = {"kind": "secret", "pk": "a1Full", "dn": "full-dev", "ds": "A" * 32}
store.save(old)
# Fill what is left, one committed block at a time (littlefs drops an unsynced write that fails).
n = 0
try:
    while True:
        with open("ballast%d" % n, "wb") as f:
            f.write(b"\xff" * _BS)
        n += 1
except OSError:
    pass
new = {"kind": "secret", "pk": "a1Full", "dn": "full-dev", "ds": "B" * 100}
e = devkit.raises("full-raises-storage-error", IotError, store.save, new, store.PATH, True)
if e is not None:
    devkit.equal("full-code", e.code, "full")
devkit.check("full-no-temp-left", store.PATH + ".tmp" not in os.listdir(), "temp file left behind")
devkit.equal("full-old-kept", store.load(), old)
for name in os.listdir():
    if name.startswith("ballast"):
        os.remove(name)
store.save(new, overwrite=True)
devkit.equal("after-space-freed", store.load(), new)
