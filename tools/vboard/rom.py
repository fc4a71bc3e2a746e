"""The virtual board in download mode: the ESP32 ROM bootloader that esptool talks to.

The SLIP protocol itself is PyPI `esp32-mock-bootloader` (chip profiles built from esptool's own
target definitions); this module gives it what a board has and the mock has not:

- a SPI flash that persists per board: `<flash dir>.img` next to the flash directory, stored without
  its trailing erased (0xFF) bytes, written when an esptool session that changed it ends;
- the chip's erase semantics: `erase-flash`, `erase-region` and the implicit erase in front of every
  write also erase the MicroPython filesystem when they touch its partition (0x200000 up, the `vfs`
  partition of MicroPython's partitions-4MiB.csv), and the filesystem is the flash directory, so its
  files go, the credential included, as littlefs does on a chip;
- a serial link that is one TCP connection of the board's server, fed from its event loop;
- the board's own MAC in its eFuse registers (the mock gives every board of a chip one MAC), the one
  machine.unique_id() returns, so `esptool read-mac` tells two virtual boards apart.

One esptool session (one connection) runs in a worker thread; the MicroPython side of the board is
powered off meanwhile (tools/vboard/server.py), as an ESP32 in download mode runs no application.
"""

import os
import queue
import shutil
import socket
import struct
import threading
from pathlib import Path

from esp32_mock_bootloader import protocol as _proto
from esp32_mock_bootloader import registers as _regs
from esp32_mock_bootloader import server as _mock

CHIPS = ("esp32", "esp32s3", "esp32c3")
FLASH_SIZE = _proto.FLASH_MOCK_SIZE  # 4 MB: what esptool's flash-id reports for the mock's JEDEC id
FS_OFFSET = 0x200000  # MicroPython's `vfs` partition (partitions-4MiB.csv) runs to the end of flash
_SLIP_END = 0xC0
DEFAULT_MAC = "24:0a:c4:00:00:01"  # tools/shims/machine.py's unique_id() without VBOARD_MAC
_RECV_WAIT_S = 5.0  # longer than esptool's own 3 s read timeout: only a vanished client is silent


def is_rom_traffic(first):
    """esptool's first bytes are a SLIP frame (0xC0); mpremote starts with \\r, Ctrl-C or Ctrl-A."""
    return bool(first) and first[0] == _SLIP_END


def image_path(flash_dir):
    """Where a board's SPI flash contents are kept: `<flash dir>.img` beside the directory."""
    flash_dir = Path(flash_dir).resolve()
    return flash_dir.with_name(flash_dir.name + ".img")


def wipe_dir(flash_dir):
    """Remove everything inside flash_dir (a formatted littlefs is empty); keep the directory."""
    for p in Path(flash_dir).iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


_session = threading.local()  # the eFuse registers of the board whose ROM session runs in this thread


class _BoardSession(_mock.ChipSession):
    """The mock's per-connection state, with this board's eFuse MAC registers in place."""

    def __init__(self, chip_mode):
        super().__init__(chip_mode)
        self.registers.update(getattr(_session, "efuse", {}))


_mock.ChipSession = _BoardSession  # handle_client() builds its session by this module-level name


def efuse_mac_registers(chip, mac):
    """{register address: value} that esptool's read_mac() decodes as mac ("aa:bb:cc:dd:ee:ff")."""
    return _regs._mac_registers(chip, tuple(int(b, 16) for b in mac.split(":")))


class SpiFlash(_mock.FlashImage):
    """The mock's flash image with a chip's erase behaviour and a file behind it."""

    def __init__(self, path, flash_dir):
        super().__init__()
        self.path = Path(path)
        self.flash_dir = Path(flash_dir)
        self.dirty = False
        self.fs_wiped = False
        self.written = 0  # bytes programmed in this session (for the console note)
        try:
            stored = self.path.read_bytes()
        except FileNotFoundError:
            stored = b""
        if len(stored) > FLASH_SIZE:
            raise ValueError("%s is larger than the %d-byte flash" % (self.path, FLASH_SIZE))
        self.data[: len(stored)] = stored

    def _erase(self, offset, size):
        end = min(offset + size, len(self.data))
        if offset < end:
            self.data[offset:end] = b"\xff" * (end - offset)
            self.dirty = True
        if size > 0 and offset < len(self.data) and end > FS_OFFSET:
            self._wipe_fs()

    def _wipe_fs(self):
        wipe_dir(self.flash_dir)
        self.fs_wiped = True

    # A flash write erases the sectors it covers first (FLASH_BEGIN / FLASH_DEFL_BEGIN carry the size).
    def begin_plain(self, payload):
        super().begin_plain(payload)
        if len(payload) >= 16:
            size, _, _, offset = _unpack4(payload)
            self._erase(offset, _sector_round(offset, size))

    def begin_defl(self, payload):
        super().begin_defl(payload)
        size, _, _, offset = _unpack4(payload)
        self._erase(offset, _sector_round(offset, size))

    def write_plain_block(self, payload):
        super().write_plain_block(payload)
        self.dirty = True
        self.written += max(0, len(payload) - 16)

    def write_defl_block(self, payload):
        before = self._defl_offset
        super().write_defl_block(payload)
        self.dirty = True
        self.written += self._defl_offset - before

    def erase_all(self):
        self._erase(0, len(self.data))

    def erase_region(self, offset, size):
        self._erase(offset, size)

    def save(self):
        """Write the image file (atomically) if this session changed the flash."""
        if not self.dirty:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(bytes(self.data).rstrip(b"\xff"))
        os.replace(tmp, self.path)
        self.dirty = False


def _unpack4(payload):
    return struct.unpack_from("<IIII", payload, 0)


def _sector_round(offset, size):
    sector = _proto.FLASH_SECTOR_SIZE
    start = offset - offset % sector
    end = -(-(offset + size) // sector) * sector
    return end - start if size else 0


class RomLink:
    """The mock's connection interface (recv/sendall/...) over bytes handed in by the event loop."""

    def __init__(self, send):
        self._send = send  # thread-safe: schedules a write on the event loop
        self._q = queue.Queue()
        self._pending = b""
        self.closed = False

    # event-loop side
    def feed(self, data):
        self._q.put(bytes(data))

    def eof(self):
        self._q.put(b"")

    # worker side (esp32_mock_bootloader.server.handle_client)
    def set_timeout(self, timeout):
        pass  # the mock's 50 ms would give up on esptool's first read-flash ack; see _RECV_WAIT_S

    def recv(self, size):
        if self.closed:
            return b""
        if not self._pending:
            try:
                self._pending = self._q.get(timeout=_RECV_WAIT_S)
            except queue.Empty:
                raise socket.timeout() from None
            if not self._pending:
                self.closed = True
                return b""
        chunk, self._pending = self._pending[:size], self._pending[size:]
        return chunk

    def sendall(self, data):
        if self.closed:
            raise OSError("serial client gone")
        self._send(bytes(data))

    def close(self):
        self.closed = True

    def ignore_eof_for_disconnect(self):
        return False

    def abort_empty_session(self):
        return False


class Rom:
    """The ROM bootloader of one virtual board: its chip, its persistent flash, one session at a time."""

    def __init__(self, chip, flash_dir, image=None, mac=DEFAULT_MAC):
        if chip not in CHIPS:
            raise ValueError("chip must be one of %s" % ", ".join(CHIPS))
        self.chip = chip
        self.efuse = efuse_mac_registers(chip, mac or DEFAULT_MAC)
        self.flash_dir = Path(flash_dir)
        self.image = Path(image) if image else image_path(flash_dir)
        self.flash = SpiFlash(self.image, self.flash_dir)  # fails early on an unreadable image
        self._stop = threading.Event()

    def serve(self, link):
        """Answer esptool on link until it disconnects (blocking: run it in a worker thread).
        Returns a one-line note of what the session did to the flash."""
        f = self.flash
        f.fs_wiped, f.written = False, 0
        err = None
        _session.efuse = self.efuse
        try:
            _mock.handle_client(link, self._stop, self.chip, None, exit_on_disconnect=True, flash=f)
        except Exception as e:  # noqa: BLE001 - a protocol surprise ends the session, not the board
            err = e
        finally:
            link.close()
            try:
                f.save()
            except OSError as e:
                saved = "; NOT saved to %s (%s): lost at the next start" % (f.path, e.strerror)
            else:
                saved = ""
        note = "%d bytes written%s" % (f.written, saved)
        if f.fs_wiped:
            note += "; filesystem erased"
        if err is not None:
            note += "; ROM session failed: %s: %s" % (type(err).__name__, err)
        return note

    def stop(self):
        self._stop.set()
