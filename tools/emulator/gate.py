"""The device-facing MQTT front end.

Every connection (TLS port and plain-TCP port) starts here. The gate reads the CONNECT with amqtt's packet
classes and decides as the platform would. Refusals (CONNACK 2/3/4 or a fault's code), registration
sessions (`/ext/register`, `/ext/regnwl`, the 15 s linger) and the after-CONNACK faults are answered here
with amqtt's packet encoders, because amqtt's broker cannot send them. Authenticated sessions are handed,
CONNECT bytes included, to the amqtt Broker through an external listener: from then on publish, subscribe,
keepalive and PUBACK are the broker's. The gate keeps one thing per live session: its stream, so that it
can kick a session off when the same device logs in again, and write the property-post replies.
"""

import asyncio
import json
import logging
import ssl

from amqtt.adapters import BufferReader, ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter
from amqtt.codecs_amqtt import encode_string
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import CONNECT, DISCONNECT, PINGREQ, PUBLISH, SUBSCRIBE, MQTTFixedHeader
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket

from . import auth, console, faults, registry

log = logging.getLogger("emulator")

_MAX_PACKET = 256 * 1024  # bound anything a device sends before we allocate for it
_QUIET_MAX_S = 600
_NET_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError,
               NoDataError, MQTTError, AMQTTError, ValueError)
PROPERTY_POST = "/sys/%s/%s/thing/event/property/post"
PROPERTY_SET = "/sys/%s/%s/thing/service/property/set"
_SET_REPLIES_KEPT = 50


def connack(code):
    return ConnackPacket.build(0, code).to_bytes()


def publish(topic, payload):
    return PublishPacket.build(topic, payload, None, False, 0, False).to_bytes()


def huge_publish_head(topic, payload):
    """A PUBLISH that announces the largest length MQTT allows and carries only its first bytes."""
    head = MQTTFixedHeader(PUBLISH, 0, faults.HUGE_LENGTH).to_bytes()
    return head + encode_string(topic) + payload[:16]


def compact(obj, sort=False):
    return json.dumps(obj, separators=(",", ":"), sort_keys=sort).encode()


class ReplayReader(ReaderAdapter):
    """Gives the broker the CONNECT bytes the gate already read, then the live stream."""

    def __init__(self, prefix, reader):
        self._buf = bytearray(prefix)
        self._reader = reader

    async def read(self, n=-1):
        if n < 0:
            data = bytes(self._buf) + await self._reader.read()
            self._buf.clear()
            return data
        take = bytes(self._buf[:n])
        del self._buf[:n]
        if len(take) < n:
            take += await self._reader.readexactly(n - len(take))
        return take

    def feed_eof(self):
        self._reader.feed_eof()


class Conn:
    def __init__(self, reader, writer, tls):
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = (peer[0], peer[1])
        self.pk = self.dn = self.client_id = ""
        self.plain_tls_port = False

    @property
    def label(self):
        return "%s:%d" % self.peer

    def send(self, data):
        if not self.writer.is_closing():
            self.writer.write(data)

    def close(self):
        if not self.writer.is_closing():
            self.writer.close()


class Gate:
    def __init__(self, app):
        self.app = app
        self._admitted = set()
        self._live = {}        # "pk/dn" -> Conn of the device's authenticated session
        self._by_client = {}   # broker client_id -> Conn
        self.tasks = set()

    # ---- hooks for the broker plugins ----

    def live_keys(self):
        return set(self._live)

    def is_admitted(self, host, port):
        return (host, port) in self._admitted

    async def on_device_publish(self, client_id, topic, data):
        conn = self._by_client.get(client_id)
        if conn is None:
            return
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        key = registry.device_key(conn.pk, conn.dn)
        if topic.startswith("/ota/device/") or topic.endswith("/thing/ota/firmware/get"):
            self.app.messages.record(key, "up", topic, data)
            reply = self.app.ota.on_publish(conn.pk, conn.dn, topic, body)
            if reply:
                await self.app.broker.internal_message_broadcast(reply[0], reply[1], 0)
            return
        if topic == PROPERTY_SET % (conn.pk, conn.dn) + "_reply":
            self._record_set_reply(conn, body)
            self.app.messages.record(key, "up", topic, data)
            return
        if topic != PROPERTY_POST % (conn.pk, conn.dn):
            self.app.messages.record(key, "up", topic, data)
            return
        fault = self._reply_fault(conn.pk, conn.dn)
        if isinstance(body, dict):
            code = fault.get("reply_code", 200)
            reply = {"code": code, "data": {}, "id": body.get("id"),
                     "message": "success" if code == 200 else "refused (emulator fault)",
                     "method": "thing.event.property.post", "version": "1.0"}
        else:
            reply = {"code": 460, "data": {}, "id": None, "message": "request parameter error",
                     "method": "thing.event.property.post", "version": "1.0"}
        await self._reply(conn, topic + "_reply", compact(reply, sort=True), fault)
        self.app.messages.record(key, "up", topic, data)  # after the reply: off the post's round trip
        self.app.messages.record(key, "down", fault.get("topic") or topic + "_reply",
                                 fault.payload if fault.payload is not None else compact(reply, sort=True))

    def _subscribed(self, client_id, topic):
        # Whether the broker will deliver topic to this client (amqtt 0.12: Broker._subscriptions, _matches).
        broker = self.app.broker
        return any(broker._matches(topic, f) and any(s.client_id == client_id for s, _ in subs)
                   for f, subs in list(broker._subscriptions.items()))

    def _record_set_reply(self, conn, body):
        if not isinstance(body, dict) or body.get("id") is None:
            log.info("%s %s/%s: malformed property set reply", conn.label, conn.pk, conn.dn)
            return
        log.info("%s %s/%s: property set id=%s answered with code %s", conn.label, conn.pk, conn.dn,
                 body.get("id"), body.get("code"))
        with self.app.store.edit() as data:
            replies = data.setdefault("set_replies", {})
            replies[str(body["id"])] = body
            for old in list(replies)[:-_SET_REPLIES_KEPT]:
                del replies[old]

    async def deliver_downlinks(self):
        """Send queued property sets (the `set` subcommand: the console's "set property") and publishes
        (`publish`: the console's "publish to a topic") through the broker, so that only a device
        subscribed to the topic gets them."""
        if not self.app.store.read().get("downlink"):
            return
        with self.app.store.edit() as data:
            queued = data.pop("downlink", [])
            sends = []
            for item in queued:
                key = item["target"]
                if item.get("kind") == "publish":
                    conn = self._live.get(key)
                    if conn is None:
                        console.record_result(data, item["id"], {"error": "offline"})
                        continue
                    ok = self._subscribed(conn.client_id, item["topic"])
                    console.record_result(data, item["id"], {"subscribed": ok})
                    if ok:
                        sends.append((item["topic"], bytes.fromhex(item["payload_hex"]), key, item["id"]))
                    log.info("%s: publish id=%s on %s %s", key, item["id"], item["topic"],
                             "sent" if ok else "dropped: not subscribed")
                    continue
                if key not in self._live:
                    log.info("%s: property set id=%s not sent: device offline", key, item["id"])
                    data.setdefault("set_replies", {})[item["id"]] = {"id": item["id"], "error": "offline"}
                    continue
                pk, dn = key.split("/", 1)
                body = compact({"id": item["id"], "method": "thing.service.property.set",
                                "params": item["params"], "version": "1.0"})
                sends.append((PROPERTY_SET % (pk, dn), body, key, item["id"]))
        for topic, body, key, mid in sends:
            if topic.endswith("/thing/service/property/set"):
                log.info("%s: property set id=%s sent", key, mid)
            await self.app.broker.internal_message_broadcast(topic, body, 0)
            self.app.messages.record(key, "down", topic, body)

    # ---- connections ----

    async def serve(self, reader, writer, tls, tls_port=False):
        conn = Conn(reader, writer, tls)
        conn.plain_tls_port = tls_port and not tls  # the `plain` TLS fault
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self._serve(conn)
        except _NET_ERRORS as e:
            log.debug("%s: connection ended: %s", conn.label, type(e).__name__)
        except Exception as e:  # garbage from one device must not take the others down
            log.warning("%s: connection dropped on %s: %s", conn.label, type(e).__name__, e)
        finally:
            self.tasks.discard(task)
            conn.close()

    async def _read_packet(self, conn, timeout, first=False):
        """(fixed_header, body) of the next packet, or (None, b"") at EOF."""
        fh = await asyncio.wait_for(MQTTFixedHeader.from_stream(StreamReaderAdapter(conn.reader)), timeout)
        if fh is None:
            return None, b""
        if first and conn.plain_tls_port and (fh.packet_type, fh.flags) == (CONNECT, 0x6):
            # 0x16 is a TLS handshake record, not an MQTT CONNECT (whose flags are 0). Answer in clear
            # (CONNACK 1 + PINGRESP: 6 bytes, more than a TLS record header) and close, so the device's
            # TLS stack fails at once on a non-TLS record instead of seeing a bare EOF.
            log.info("%s: TLS ClientHello on the TLS port served as plain TCP (fault): answered in clear",
                     conn.label)
            conn.send(connack(1) + PingRespPacket.build().to_bytes())
            return None, b""
        if fh.remaining_length > _MAX_PACKET:
            raise MQTTError("packet of %d bytes refused" % fh.remaining_length)
        body = await asyncio.wait_for(conn.reader.readexactly(fh.remaining_length), timeout)
        return fh, body

    async def _serve(self, conn):
        fh, body = await self._read_packet(conn, self.app.connect_timeout, first=True)
        if fh is None or fh.packet_type != CONNECT:
            return
        packet = await ConnectPacket.from_stream(BufferReader(body), fixed_header=fh)
        if packet.proto_name not in ("MQTT", "MQIsdp") or packet.proto_level not in (3, 4):
            conn.send(connack(1))
            return
        c = auth.classify(packet.client_id, packet.username, packet.keep_alive, conn.tls)
        conn.pk, conn.dn, conn.client_id = c.pk, c.dn, packet.client_id
        if c.code:
            return self._refuse(conn, c, c.code, c.reason)
        if c.kind in auth.REGISTRATIONS:
            return await self._registration(conn, c, packet.password)
        return await self._session(conn, c, packet, fh.to_bytes() + body)

    def _refuse(self, conn, c, code, reason):
        log.info("%s %s %s/%s: CONNACK %d (%s)", conn.label, c.kind or "?", c.pk or "?", c.dn or "?",
                 code, reason)
        conn.send(connack(code))

    def _reply_fault(self, pk, dn):
        """The reply-shaping faults that act on a property post (kind "connect")."""
        fault = faults.lookup(self.app.store.read(), pk, dn, "connect")
        keep = ("payload_hex", "topic", "double", "huge", "delay_ms", "reply_code")
        fields = {k: v for k, v in fault.fields.items() if k in keep}
        active = faults.Active(fields, fault.keys if fields else [])
        self._consume(active)
        return active

    def _pre_checks(self, conn, c):
        """Fault refusal and rate limit; returns (fault, refused?)."""
        fault = faults.lookup(self.app.store.read(), c.pk, c.dn, c.fault_kind)
        if fault.get("refuse") is not None:
            self._consume(fault)
            self._refuse(conn, c, fault.get("refuse"), "fault")
            return fault, True
        if c.kind in auth.REGISTRATIONS and fault.rate:
            key, per_second = fault.rate
            if not self.app.limiter.allow(key, per_second):
                self._refuse(conn, c, auth.SERVER_UNAVAILABLE, "rate limit %d/s" % per_second)
                return fault, True
        return fault, False

    def _consume(self, fault):
        if fault.keys:
            with self.app.store.edit() as data:
                faults.consume(data, fault.keys)

    async def _registration(self, conn, c, password):
        fault, refused = self._pre_checks(conn, c)
        if refused:
            return
        method = c.options["signmethod"].lower()
        # The real reply goes out unless a fault replaces it; then no credential is issued either.
        issue = not (fault.get("after") or fault.payload is not None or fault.get("huge"))
        with self.app.store.edit() as data:
            prod = data["products"].get(c.pk)
            dev = data["devices"].get(registry.device_key(c.pk, c.dn))
            if prod is None:
                code, reason = auth.BAD_CREDENTIALS, "unknown product"
            else:
                code, reason = auth.check_registration(c.kind, prod, dev, c.pk, c.dn, c.options["random"],
                                                       method, password)
            reply = None
            if code == auth.ACCEPTED:
                faults.consume(data, fault.keys)
                if issue and c.kind == "register":
                    secret = registry.issue_secret(data, c.pk, c.dn)
                    reply = {"productKey": c.pk, "deviceName": c.dn, "deviceSecret": secret}
                elif issue:
                    cid, token = registry.issue_token(data, c.pk, c.dn)
                    reply = {"productKey": c.pk, "deviceName": c.dn, "clientId": cid, "deviceToken": token}
        if code:
            return self._refuse(conn, c, code, reason)
        log.info("%s %s %s/%s: CONNACK 0%s", conn.label, c.kind, c.pk, c.dn,
                 " (faults: %s)" % ",".join(sorted(fault.fields)) if fault else "")
        conn.send(connack(0))
        if await self._after_connack(conn, fault):
            return
        topic = "/ext/register" if c.kind == "register" else "/ext/regnwl"
        await self._reply(conn, topic, compact(reply) if reply else b"", fault)
        await self._linger(conn)

    async def _after_connack(self, conn, fault):
        """The quiet/close faults; True when they took over the connection."""
        after = fault.get("after")
        if after == "close":
            await conn.writer.drain()
            return True
        if after == "quiet":
            await conn.writer.drain()
            await self._discard_until_eof(conn, _QUIET_MAX_S)
            return True
        return False

    async def _reply(self, conn, topic, payload, fault):
        delay = fault.get("delay_ms")
        if delay:
            await asyncio.sleep(delay / 1000)
        if fault.payload is not None:
            payload = fault.payload
        topic = fault.get("topic") or topic
        if fault.get("huge"):
            conn.send(huge_publish_head(topic, payload))
        else:
            packet = publish(topic, payload)
            conn.send(packet + packet if fault.get("double") else packet)
        await conn.writer.drain()

    async def _discard_until_eof(self, conn, limit_s):
        try:
            async with asyncio.timeout(limit_s):
                while await conn.reader.read(4096):
                    pass
        except TimeoutError:
            pass

    async def _linger(self, conn):
        """Serve the registration session until DISCONNECT, EOF or the linger time (the platform: 15 s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.app.register_linger
        while True:
            left = deadline - loop.time()
            if left <= 0:
                log.info("%s %s/%s: registration session closed after %.1f s without DISCONNECT",
                         conn.label, conn.pk, conn.dn, self.app.register_linger)
                return
            try:
                fh, body = await self._read_packet(conn, left)
            except asyncio.TimeoutError:
                continue
            if fh is None or fh.packet_type == DISCONNECT:
                return
            if fh.packet_type == PINGREQ:
                conn.send(PingRespPacket.build().to_bytes())
            elif fh.packet_type == SUBSCRIBE:
                sub = await SubscribePacket.from_stream(BufferReader(body), fixed_header=fh)
                codes = [min(qos, 1) for _, qos in sub.payload.topics]
                conn.send(SubackPacket.build(sub.variable_header.packet_id, codes).to_bytes())
            elif fh.packet_type == PUBLISH and fh.flags & 0x06:
                pub = await PublishPacket.from_stream(BufferReader(body), fixed_header=fh)
                conn.send(PubackPacket.build(pub.variable_header.packet_id).to_bytes())

    async def _session(self, conn, c, packet, raw_connect):
        fault, refused = self._pre_checks(conn, c)
        if refused:
            return
        with self.app.store.edit() as data:
            code, reason = auth.verify(c, packet.password, data)
            if code == auth.ACCEPTED:
                registry.activate(data, c.pk, c.dn)
                if fault.get("after"):
                    faults.consume(data, fault.keys)
        if code:
            return self._refuse(conn, c, code, reason)
        if fault.get("after"):
            log.info("%s %s %s/%s: CONNACK 0 (fault: %s)", conn.label, c.kind, c.pk, c.dn, fault.get("after"))
            conn.send(connack(0))
            await self._after_connack(conn, fault)
            return
        key = registry.device_key(c.pk, c.dn)
        old = self._live.get(key)
        if old is not None:
            log.info("%s %s: kicked off by a new login from %s", old.label, key, conn.label)
            old.close()
        log.info("%s %s %s: CONNACK 0 (%s), session handed to the broker", conn.label, c.kind, key, reason)
        self._admitted.add(conn.peer)
        self._live[key] = conn
        self._by_client[packet.client_id] = conn
        try:
            await self.app.broker.external_connected(ReplayReader(raw_connect, conn.reader),
                                                     StreamWriterAdapter(conn.writer), "default")
        finally:
            self._admitted.discard(conn.peer)
            if self._live.get(key) is conn:
                del self._live[key]
            if self._by_client.get(packet.client_id) is conn:
                del self._by_client[packet.client_id]
