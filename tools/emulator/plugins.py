"""amqtt broker plugins: the platform's side of an authenticated session.

The gate (gate.py) has already checked the CONNECT (and answered every refusal itself, because amqtt
only knows CONNACK 5 for a failed login). These plugins then let the amqtt Broker run the session:
- AliyunAuthPlugin admits exactly the connections the gate handed over, and stretches the keepalive
  timeout to 1.5 x keepalive as MQTT 3.1.1 says (amqtt waits exactly keepalive).
- AliyunTopicPlugin keeps a device to its own topics, like the platform's topic authorization.
- AlinkPlugin answers thing.event.property.post on `..._reply`.
Plugins are built by amqtt from a dotted path, so they find their emulator through APPS by id.
"""

import math
from dataclasses import dataclass

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin

APPS = {}


def _app(config):
    return APPS.get(getattr(config, "app", ""))


def _device_of(session):
    # The gate only admits sessions whose username is "{dn}&{pk}".
    dn, _, pk = (session.username or "").partition("&")
    return pk, dn


class AliyunAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        app: str = ""

    async def authenticate(self, *, session):
        app = _app(self.config)
        if app is None or not app.gate.is_admitted(session.remote_address, session.remote_port):
            return False
        if session.keep_alive:
            session.keep_alive = math.ceil(session.keep_alive * 1.5)
        return True


class AliyunTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        app: str = ""

    async def topic_filtering(self, *, session=None, topic=None, action=None):
        if session is None or topic is None:
            return False
        pk, dn = _device_of(session)
        # Publish, subscribe and delivery alike: only the device's own topic space.
        own = ("/sys/%s/%s/" % (pk, dn), "/%s/%s/" % (pk, dn))
        own_tail = "/%s/%s" % (pk, dn)  # /shadow/update/{pk}/{dn}, /ota/device/inform/{pk}/{dn}, ...
        mine = topic.startswith(own) or (
            topic.startswith(("/shadow/", "/ota/device/")) and topic.endswith(own_tail))
        return action in (Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE) and mine


class AlinkPlugin(BasePlugin):
    @dataclass
    class Config:
        app: str = ""

    async def on_broker_message_received(self, *, client_id, message):
        app = _app(self.config)
        if app is None or message is None or not message.topic:
            return
        await app.gate.on_device_publish(client_id, message.topic, bytes(message.data or b""))
