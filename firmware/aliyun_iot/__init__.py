# Alibaba Cloud IoT Platform first-boot self-registration for MicroPython.
# Kept tiny: submodules are imported only by the boot stage that needs them.
__version__ = "0.1.0"
