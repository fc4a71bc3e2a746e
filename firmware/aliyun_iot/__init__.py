# Alibaba Cloud IoT Platform first-boot self-registration for MicroPython.
# Kept tiny: submodules are imported only by the boot stage that needs them.
__version__ = "0.2.0"


def connect(cfg_path="config.json"):
    """Bring the device online and return its Session: Wi-Fi, clock, the stored credential (registering
    on the first boot only), the MQTT connection and an "online" post. Raises IotError when it cannot."""
    from aliyun_iot import boot_flow

    return boot_flow.run(cfg_path)


def recover(e):
    """Report exception e and reset the board when a retry can help (see README). Never returns."""
    from aliyun_iot import boot_flow

    boot_flow.recover(e)
