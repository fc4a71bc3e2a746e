# The littlefs flash that loses power, shared by the power-cut sweeps (powercut.py: a credential write;
# ota_powercut.py: an OTA update). A RAM block device with the extended interface of the ESP32's flash
# (offsets, an erase ioctl) that loses power after its N-th program/erase: the op that is cut either does
# nothing ("clean") or writes half of its data ("torn"), raises OSError, and every later write is dropped.
# MicroPython unix port only (vfs.VfsLfs2).
import os

import devkit

vfs = devkit.require_lfs2()

_EIO = 5
_BLOCK = 4096  # the ESP32's flash sector
_MOUNT = "/flash"


class PowerCutDev:
    """One power-on of the RAM flash `data`: ops counted, power lost after `cut_after` of them.

    A new object per power-on: file objects of an earlier mount that the GC finalises later
    still hold the old one, whose writes must go nowhere (its RAM state died with the power).
    """

    def __init__(self, data, size, cut_after=None, torn=False):
        self.data = data
        self.size = size
        self.blocks = len(data) // size
        self.cut_after = cut_after
        self.torn = torn
        self.ops = 0
        self.erases = 0
        self.erased = set()
        self.dead = False

    def _alive(self):
        if self.dead:
            return False
        self.ops += 1
        if self.cut_after is not None and self.ops > self.cut_after:
            self.dead = True
            return None  # this is the op the cut hits
        return True

    def readblocks(self, block, buf, off=0):
        if self.dead:
            return -_EIO  # no allocation: this may run in a finaliser with the heap locked
        a = block * self.size + off
        buf[:] = self.data[a : a + len(buf)]
        return 0

    def writeblocks(self, block, buf, off=0):
        state = self._alive()
        if state:
            a = block * self.size + (off or 0)
            self.data[a : a + len(buf)] = buf
            return 0
        if state is False:
            return -_EIO
        if self.torn:
            half = len(buf) // 2
            a = block * self.size + (off or 0)
            self.data[a : a + half] = buf[:half]
        raise OSError(_EIO)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.size
        if op == 6:  # erase
            state = self._alive()
            a = arg * self.size
            if state:
                self.erases += 1
                self.erased.add(arg)
                self.data[a : a + self.size] = b"\xff" * self.size
                return 0
            if state is False:
                return -_EIO
            if self.torn:
                self.data[a : a + self.size // 2] = b"\xff" * (self.size // 2)
            raise OSError(_EIO)
        return 0


def power_on(data, cut_after=None, torn=False):
    """Mount the flash image `data` (a bytearray, changed in place); returns the device."""
    dev = PowerCutDev(data, _BLOCK, cut_after, torn)
    vfs.mount(vfs.VfsLfs2(dev), _MOUNT)
    os.chdir(_MOUNT)
    return dev


def power_off(dev):
    os.chdir("/")
    try:
        vfs.umount(_MOUNT)
    except OSError:
        pass
    dev.dead = True
