# ruff: noqa: F821  (metadata, package: given by MicroPython's manifest tool)
# The package's manifest, in micropython-lib's form: freeze it into a firmware you build by including this
# file from your board's manifest, after the port's own (boards/<BOARD>/manifest.py do exactly that).
# The version is the package's __version__ (firmware/aliyun_iot/__init__.py): tools.mip_package checks it.
# Dependencies: umqtt.simple and ntptime. Every stock ESP32 port manifest already freezes both (it requires
# umqtt.simple and bundle-networking), so nothing is required here; if your port manifest does not, add
# require("umqtt.simple") and require("ntptime") to your board manifest.
metadata(
    description="Alibaba Cloud IoT Platform dynamic registration for MicroPython",
    version="0.3.0",
    license="MIT",
)
package("aliyun_iot")
