"""Small fake MicroPython firmware files for esptool tests: a valid ESP image, then filler.

    esp_image(chip, size=64 * 1024, seed=0) -> bytes   (size=None: the bootloader image alone)

The file starts like a downloaded MicroPython .bin does, with the second-stage bootloader: an ESP
image header (magic 0xE9, the chip's id in the extended header), one RAM segment, the checksum and
the SHA-256 digest, built by esptool's own image classes so that `esptool image-info` and write-flash's
own image check accept it. Seeded random bytes fill the rest up to size, so a read-back that is off by
one byte or one offset shows.

Fixture: `esp_firmware(chip, size=..., seed=...) -> Path` writes one into the test's tmp_path.
"""

import random

import pytest
from esptool.bin_image import ELFSection, ESP32C3FirmwareImage, ESP32FirmwareImage, ESP32S3FirmwareImage
from esptool.targets import CHIP_DEFS

_IMAGE_CLASSES = {
    "esp32": ESP32FirmwareImage,
    "esp32s3": ESP32S3FirmwareImage,
    "esp32c3": ESP32C3FirmwareImage,
}


def esp_image(chip, size=64 * 1024, seed=0):
    rng = random.Random("%s-%d" % (chip, seed))
    image = _IMAGE_CLASSES[chip]()
    dram = next(start for start, _end, name in CHIP_DEFS[chip].MEMORY_MAP if name == "DRAM")
    image.segments = [ELFSection(b".dram0.data", dram, rng.randbytes(2048), flags=0)]
    image.entrypoint = dram
    data = image.save(None)
    if size is None:
        return data
    if len(data) > size:
        raise ValueError("size must be at least %d" % len(data))
    return data + rng.randbytes(size - len(data))


@pytest.fixture
def esp_firmware(tmp_path):
    def make(chip, size=64 * 1024, seed=0):
        path = tmp_path / ("fw-%s-%d.bin" % (chip, seed))
        path.write_bytes(esp_image(chip, size, seed))
        return path

    return make
