"""Local emulator of the Alibaba Cloud IoT Platform's device-facing side (docs/emulator.md, docs/protocol.md).

Run `python -m tools.emulator --help`. Built on amqtt: its packet codec for the CONNECT gate and the
registration sessions, its Broker (with the plugins in plugins.py) for authenticated sessions.
"""
