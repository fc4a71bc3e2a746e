"""The virtual ESP32 board: the MicroPython unix port on a flash directory, reachable by mpremote.

    python -m tools.vboard serve --flash DIR [--port 0]      # serial port at socket://127.0.0.1:PORT
    python -m tools.vboard boot --flash DIR --until online   # power on once, wait for a state

Python API: `boot(flash, until, timeout, env=...) -> BootResult`, `Board`, `SerialServer`.
"""

from tools.vboard.board import Board, BoardConfig
from tools.vboard.bootrun import STATES, BootResult, StateMark, boot, boot_async
from tools.vboard.server import SerialServer

__all__ = ["STATES", "Board", "BoardConfig", "BootResult", "SerialServer", "StateMark", "boot", "boot_async"]
