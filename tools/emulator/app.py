"""Wiring: the registry, the CA, the amqtt Broker with our plugins, and the three listeners."""

import asyncio
import contextlib
import logging
import os
import uuid
from functools import partial

from amqtt.broker import Broker

from . import certs, console, faults, plugins
from .gate import Gate
from .https import HttpsRegistrar
from .ota import Ota
from .registry import Store

log = logging.getLogger("emulator")

_PLUGINS = ("AliyunAuthPlugin", "AliyunTopicPlugin", "AlinkPlugin")


class Emulator:
    def __init__(self, state_dir, host="127.0.0.1", port=8883, tcp_port=1883, https_port=8443,
                 register_linger=15.0, tls_fault="none", connect_timeout=10.0):
        self.state_dir = os.path.abspath(state_dir)
        self.host = host
        self.ports = {"tls": port, "tcp": tcp_port, "https": https_port}
        self.register_linger = register_linger
        self.tls_fault = tls_fault
        self.connect_timeout = connect_timeout
        self.store = Store(self.state_dir)
        self.limiter = faults.RateLimiter()
        self.gate = Gate(self)
        self.https = HttpsRegistrar(self)
        self.ota = Ota(self)
        self.broker = None
        self._servers = []
        self._tasks = []
        self._id = uuid.uuid4().hex

    async def start(self):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.store.read()  # fail early on an unreadable registry
        self.messages = console.MessageLog(self.state_dir)
        ca = certs.load_or_create_ca(self.state_dir)
        ctx = certs.server_context(ca, self.tls_fault)
        # Bind first (a port in use fails here, before anything else started), serve once the broker runs.
        try:
            mqtt_tls = partial(self.gate.serve, tls=ctx is not None, tls_port=True)
            tls_port = await self._listen(mqtt_tls, self.ports["tls"], ctx)
            tcp_port = await self._listen(partial(self.gate.serve, tls=False), self.ports["tcp"], None)
            https_port = await self._listen(self.https.serve, self.ports["https"], ctx)
        except OSError:
            await self.stop()
            raise
        self.ports = {"tls": tls_port, "tcp": tcp_port, "https": https_port}
        plugins.APPS[self._id] = self
        config = {
            "listeners": {"default": {"type": "external"}},
            "plugins": {"tools.emulator.plugins." + name: {"app": self._id} for name in _PLUGINS},
        }
        self.broker = Broker(config, plugin_namespace="tools.emulator." + self._id)
        await self.broker.start()
        for server in self._servers:
            await server.start_serving()
        self._tasks.append(asyncio.ensure_future(self._downlink_loop()))

    async def _downlink_loop(self):
        while True:
            await asyncio.sleep(0.1)
            try:
                await self.gate.deliver_downlinks()
            except Exception:  # noqa: BLE001 - one bad entry must not stop the console's channel
                log.exception("downlink delivery failed")
            try:
                await self.ota.deliver(self.gate.live_keys())
            except Exception:  # noqa: BLE001 - the OTA console's channel, likewise
                log.exception("ota push failed")

    async def _listen(self, handler, port, ctx):
        kwargs = {"ssl": ctx, "ssl_handshake_timeout": self.connect_timeout} if ctx else {}
        server = await asyncio.start_server(handler, self.host, port, start_serving=False, **kwargs)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    def ready_line(self):
        h = self.host
        return "emulator listening on %s:%d tcp=%s:%d https=%s:%d ca=%s ca_der=%s" % (
            h, self.ports["tls"], h, self.ports["tcp"], h, self.ports["https"],
            os.path.join(self.state_dir, certs.CA_PEM), os.path.join(self.state_dir, certs.CA_DER))

    async def stop(self):
        for task in self._tasks:
            task.cancel()
        for server in self._servers:
            server.close()
        for task in list(self.gate.tasks):
            task.cancel()
        await asyncio.gather(*self.gate.tasks, return_exceptions=True)
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.shutdown(), 5)
        plugins.APPS.pop(self._id, None)
