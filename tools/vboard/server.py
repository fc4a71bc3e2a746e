"""The board's serial port as a TCP socket (pyserial's socket://127.0.0.1:PORT), optionally a pty.

One client at a time, like a serial port: a new connection replaces the previous one (a tool that
just exited may not have been noticed yet). The board keeps running with nobody connected; what it
prints then is lost, as on a UART with nothing attached, unless a console log file is given.

The pty (--pty) is for `mpremote connect /dev/pts/N repl`: mpremote's interactive repl needs a serial
object with a file descriptor, which pyserial's socket:// has not.

A TCP client whose first byte opens a SLIP frame (0xC0) is esptool: that connection is the board in
download mode (tools/vboard/rom.py). MicroPython is powered off for it and powered on again when
esptool disconnects, on whatever the flash directory then holds.
"""

import asyncio
import contextlib
import os
import socket
import tty

from tools.vboard import rom
from tools.vboard.board import Board, BoardConfig, _debug


def _quickack(sock):
    # mpremote writes a command and then its \x04 in two sends; Nagle holds the second until we ACK
    # the first, and a delayed ACK costs ~40 ms per command. Linux clears the flag now and then,
    # so it is set again after every read.
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class SerialServer:
    def __init__(self, cfg: BoardConfig, host="127.0.0.1", port=0, console_log=None, pty=False, chip=None,
                 image=None):  # fmt: skip
        self.cfg = cfg
        # chip: the ROM bootloader answered on socket:// (None: esptool gets the REPL, as on a board
        # that is not in download mode). image: its SPI flash file (default: rom.image_path).
        self.rom = rom.Rom(chip, cfg.flash, image, mac=cfg.mac) if chip else None
        self._rom_lock = asyncio.Lock()
        self._download = None  # the client in download mode: no console output goes to it
        self._closing = False
        self.host = host
        self.port = port
        self.console_log = console_log
        self.board = Board(cfg, on_output=self._output)
        self.pty_path = None
        self._want_pty = pty
        self._pty_fds = None
        self._server = None
        self._client = None
        self._log = None

    @property
    def url(self):
        return "socket://%s:%d" % (self.host, self.port)

    async def start(self):
        if self.console_log:
            self._log = open(self.console_log, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self._want_pty:
            self._open_pty()
        await self.board.start()

    def _open_pty(self):
        master, slave = os.openpty()
        # Raw at once: an echoing line discipline would hand the board its own output as input.
        # The slave stays open here too, so the master never reads EIO between two clients.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty_fds = (master, slave)
        self.pty_path = os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._pty_readable)

    def _pty_readable(self):
        try:
            data = os.read(self._pty_fds[0], 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if data:
            self.board.feed(data)

    async def stop(self):
        self._closing = True
        if self.rom:
            self.rom.stop()
        if self._server:
            self._server.close()
        if self._client:
            self._client.close()
        await self.board.stop()
        if self._server:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self._log:
            self._log.close()
            self._log = None
        if self._pty_fds:
            asyncio.get_running_loop().remove_reader(self._pty_fds[0])
            for fd in self._pty_fds:
                os.close(fd)
            self._pty_fds = None

    def _note(self, text):
        # Board events for the console log only: the serial client may be esptool, which wants SLIP.
        _debug(text)
        if self._log:
            self._log.write(b"\r\nvboard: %s\r\n" % text.encode())

    def _output(self, data):
        if self._log:
            self._log.write(data)
        if self._client and self._client is not self._download and not self._client.is_closing():
            self._client.write(data)
        if self._pty_fds:
            # Nobody reading the pty: its buffer fills and the rest is lost, like an unplugged UART.
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._pty_fds[0], data)

    async def _handle(self, reader, writer):
        _debug("client connected", writer.get_extra_info("peername"))
        if self._client:
            self._client.close()
        self._client = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Small writes (prompts, "OK", \x04 markers) must not wait for the client's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _quickack(sock)
        try:
            data = await reader.read(65536)
            if self.rom and rom.is_rom_traffic(data) and self._client is writer:
                await self._download_mode(reader, writer, data)
                return
            while data:
                _quickack(sock)
                if self._client is not writer:
                    break  # replaced by a newer client
                self.board.feed(data)
                data = await reader.read(65536)
        except (ConnectionError, OSError):
            pass
        finally:
            _debug("client gone", writer.get_extra_info("peername"))
            if self._client is writer:
                self._client = None
            writer.close()

    async def _download_mode(self, reader, writer, first):
        """One esptool session on the ROM bootloader, with MicroPython powered off meanwhile."""
        async with self._rom_lock:
            loop = asyncio.get_running_loop()
            self._download = writer
            await self.board.stop()
            self._note("download mode: ROM bootloader (%s) on the serial port" % self.rom.chip)

            def send(data):
                loop.call_soon_threadsafe(_write_open, writer, data)

            link = rom.RomLink(send)
            link.feed(first)
            worker = loop.run_in_executor(None, self.rom.serve, link)
            pump = asyncio.ensure_future(_pump(reader, link, writer.get_extra_info("socket")))
            try:
                note = await worker
            finally:
                writer.close()  # the worker ended first: the session is over for the client too
                await pump
                if self._download is writer:
                    self._download = None
            if self._closing:
                return
            self._note("download mode ended: %s; power-on" % note)
            await self.board.start()


def _write_open(writer, data):
    if not writer.is_closing():
        writer.write(data)


async def _pump(reader, link, sock):
    """Serial input of a download-mode client to the ROM worker, then its end."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            _quickack(sock)
            link.feed(data)
    except (ConnectionError, OSError):
        pass
    finally:
        link.eof()
