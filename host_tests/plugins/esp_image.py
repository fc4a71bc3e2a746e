"""Small fake MicroPython firmware files for esptool tests, laid out as a downloaded full-flash .bin.

    esp_image(chip, seed=0, app_size=2048, md5=True) -> bytes   the whole file
    bootloader_image(chip, seed=0) -> bytes                      the bootloader image alone
    partition_table(entries, md5=True) -> bytes                  a table as gen_esp32part.py writes it
    layout(chip) -> {"offset", "table", "app", "app_size"}       where each part sits (file offsets)

A downloaded MicroPython .bin is written at the chip's flash offset (0x1000 on the ESP32, 0x0 on the
S3/C3) and holds, at flash addresses: the second-stage bootloader (an ESP image), the partition table
at 0x8000 (32-byte entries, then the MD5 entry gen_esp32part.py appends), and the app (an ESP image)
at the factory partition's offset, 0x10000 in MicroPython's partitions-4MiB.csv (ports/esp32@v1.25.0).
Both images are built by esptool's own image classes (header with the chip id, one segment of seeded
random bytes, checksum, SHA-256 digest), so `esptool image-info` and write-flash's own check accept
them; gaps are 0xFF as in the real files, and the random segments show a read-back that is off by
one byte or one offset.

Fixture: `esp_firmware(chip, seed=..., app_size=...) -> Path` writes one into the test's tmp_path.
"""

import hashlib
import random
import struct

import pytest
from esptool.bin_image import ELFSection, ESP32C3FirmwareImage, ESP32FirmwareImage, ESP32S3FirmwareImage
from esptool.targets import CHIP_DEFS

_IMAGE_CLASSES = {
    "esp32": ESP32FirmwareImage,
    "esp32s3": ESP32S3FirmwareImage,
    "esp32c3": ESP32C3FirmwareImage,
}
OFFSETS = {"esp32": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
TABLE_AT = 0x8000
APP_AT = 0x10000
# partitions-4MiB.csv (ports/esp32@v1.25.0): (label, type, subtype, offset, size)
PARTITIONS_4MB = (
    ("nvs", 1, 0x02, 0x9000, 0x6000),
    ("phy_init", 1, 0x01, 0xF000, 0x1000),
    ("factory", 0, 0x00, APP_AT, 0x1F0000),
    ("vfs", 1, 0x81, 0x200000, 0x200000),
)


def _image(chip, payload, seed):
    image = _IMAGE_CLASSES[chip]()
    dram = next(start for start, _end, name in CHIP_DEFS[chip].MEMORY_MAP if name == "DRAM")
    image.segments = [ELFSection(b".dram0.data", dram, payload, flags=0)]
    image.entrypoint = dram
    return image.save(None)


def bootloader_image(chip, seed=0):
    return _image(chip, random.Random("%s-%d-boot" % (chip, seed)).randbytes(2048), seed)


def app_image(chip, seed=0, app_size=2048):
    return _image(chip, random.Random("%s-%d-app" % (chip, seed)).randbytes(app_size), seed)


def partition_table(entries=PARTITIONS_4MB, md5=True):
    """The binary table (gen_esp32part.py): 0xAA50 entries, the 0xEBEB MD5 entry, 0xFF to 0xC00 bytes."""
    body = b"".join(
        struct.pack("<2sBBLL16sL", b"\xaa\x50", t, st, off, size, label.encode(), 0)
        for label, t, st, off, size in entries
    )
    if md5:
        body += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    return body + b"\xff" * (0xC00 - len(body))


def layout(chip):
    off = OFFSETS[chip]
    return {"offset": off, "table": TABLE_AT - off, "app": APP_AT - off}


def esp_image(chip, seed=0, app_size=2048, md5=True, table=None):
    """The whole file as written at the chip's flash offset; it ends where the app image ends."""
    where = layout(chip)
    out = bytearray(b"\xff" * where["app"])
    boot = bootloader_image(chip, seed)
    out[: len(boot)] = boot
    tab = table if table is not None else partition_table(md5=md5)
    out[where["table"] : where["table"] + len(tab)] = tab
    return bytes(out) + app_image(chip, seed, app_size)


@pytest.fixture
def esp_firmware(tmp_path):
    def make(chip, seed=0, app_size=2048):
        path = tmp_path / ("fw-%s-%d.bin" % (chip, seed))
        path.write_bytes(esp_image(chip, seed, app_size))
        return path

    return make
