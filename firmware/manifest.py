# ruff: noqa: F821  (include, package, metadata: given by MicroPython's manifest tool)
# Freezes the aliyun_iot package; included by each board's manifest.py.
# Paths are relative to this file (the manifest tool runs it from its own folder).
metadata(description="Alibaba Cloud IoT Platform dynamic registration for MicroPython", version="0.1.0")
package("aliyun_iot", base_path="../firmware")
