# ruff: noqa: F821  (include, package, metadata: given by MicroPython's manifest tool)
# Frozen modules for a firmware you build yourself (see boards/README.md):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this repo>/boards/ESP32_GENERIC/manifest.py
# The port's own manifest first (umqtt.simple, ntptime, asyncio, ...), then the package's manifest.
include("$(PORT_DIR)/boards/manifest.py")
include("../../firmware/manifest.py")
