"""pytest fixtures for the platform emulator (tools/emulator) and a paho-mqtt 2 test device.

Fixtures:
  emulator         factory: emulator(products={"pk": "ps"}, devices=["pk/dn"], regnwl=["pk"], no_dynreg=[],
                   linger=None, tls_fault=None, args=()) -> EmulatorProcess; all stopped at teardown
  shared_emulator  one EmulatorProcess per test module (empty registry; add products/devices per test)
  sdk_python       path of .venv-sdk's python (aliyun-iot-linkkit 1.2.13 + paho-mqtt 1.6.1);
                   the venv is created from requirements-sdk.txt if missing
Each emulator runs `python -m tools.emulator` in its own temp state dir on ephemeral loopback ports; its
stderr goes to a log file next to the state dir (`.log()`), never to the test's output.

EmulatorProcess attributes: host, port (MQTT/TLS), tcp_port (plain MQTT), https_port, ca_pem, ca_der
(Paths), state_dir, log_path, ready_line.
Methods: cli(*args, check=True) -> CompletedProcess, registry() -> dict, device(pk, dn) -> dict | None,
seed(products, devices, regnwl, no_dynreg), add_product(pk, ps, dynreg, regnwl), add_device(pk, dn, secret),
reset(pk, dn), fault(target, *switches), clear_faults(), client_context() -> verifying ssl.SSLContext,
log() -> str, restart(*extra_args), stop().
Device helpers: PahoDevice, register_identity, secret_identity, mqtt_register, mqtt_connect.
"""

import contextlib
import json
import queue
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tools.emulator.process import _CA_FILES, EmulatorProcess, registry_args  # noqa: F401 - re-exported for tests
from tools.sdk_venv import REPO, ensure_sdk_venv  # noqa: F401 - re-exported for tests


class EmulatorFactory:
    def __init__(self, base_dir, ca_cache):
        self.base_dir = Path(base_dir)
        self.ca_cache = Path(ca_cache)
        self.instances = []

    def __call__(
        self,
        products=None,
        devices=(),
        regnwl=(),
        no_dynreg=(),
        linger=None,
        tls_fault=None,
        args=(),
        fresh_ca=False,
        start=True,
    ):
        n = len(self.instances)
        argv = registry_args(products, devices, regnwl, no_dynreg)
        if linger is not None:
            argv += ["--register-linger", str(linger)]
        if tls_fault is not None:
            argv += ["--tls-fault", tls_fault]
        seed = None
        if not fresh_ca and all((self.ca_cache / name).exists() for name in _CA_FILES):
            seed = self.ca_cache  # reuse one RSA CA per test session: minting one costs time
        emu = EmulatorProcess(
            self.base_dir / ("state%d" % n),
            self.base_dir / ("emulator%d.log" % n),
            [*argv, *args],
            ca_seed=seed,
        )
        self.instances.append(emu)
        if start:
            emu.start()
            if seed is None and not fresh_ca:
                self.ca_cache.mkdir(parents=True, exist_ok=True)
                for name in _CA_FILES:
                    shutil.copy(emu.state_dir / name, self.ca_cache / name)
        return emu

    def stop_all(self):
        for emu in self.instances:
            emu.stop()


@pytest.fixture(scope="session")
def _emulator_ca_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("emulator-ca")


@pytest.fixture
def emulator(tmp_path, _emulator_ca_cache):
    factory = EmulatorFactory(tmp_path / "emulator", _emulator_ca_cache)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory, _emulator_ca_cache):
    factory = EmulatorFactory(tmp_path_factory.mktemp("shared-emulator"), _emulator_ca_cache)
    try:
        yield factory(linger=3)
    finally:
        factory.stop_all()


# ---- the official SDK's venv ----


@pytest.fixture
def prod(shared_emulator):
    """A fresh product with devices dev-0..dev-3 on the module's emulator: (emu, pk, ps)."""
    pk = "a1" + secrets.token_hex(5)
    ps = secrets.token_urlsafe(12)
    shared_emulator.seed(products={pk: ps}, devices=["%s/dev-%d" % (pk, i) for i in range(4)])
    return shared_emulator, pk, ps


@pytest.fixture(scope="session")
def sdk_python():
    try:
        return ensure_sdk_venv()
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        pytest.skip("cannot set up .venv-sdk for aliyun-iot-linkkit: %s" % e)


# ---- a paho-mqtt 2 test device ----

_RC = {
    "Success": 0,
    "Unsupported protocol version": 1,
    "Client identifier not valid": 2,
    "Server unavailable": 3,
    "Bad user name or password": 4,
    "Not authorized": 5,
}


class PahoDevice:
    """A paho-mqtt 2 client that records CONNACK, messages and disconnection, for emulator tests."""

    def __init__(self, emu, client_id, username, password, tls=True, keepalive=60, host=None):
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.emu = emu
        self.tls = tls
        self.host = host or emu.host
        self.keepalive = keepalive
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set_context(emu.client_context())
        self.connack = queue.Queue()
        self.messages = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connack.put(
            _RC.get(rc.getName(), rc.value)
        )
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, bytes(msg.payload)))
        self.client.on_disconnect = lambda *a: self.disconnected.set()

    def connect(self, timeout=10):
        """CONNACK return code (MQTT 3.1.1 numbering). Raises on timeout or a dropped connection."""
        port = self.emu.port if self.tls else self.emu.tcp_port
        self.client.connect(self.host, port, keepalive=self.keepalive)
        self.client.loop_start()
        try:
            return self.connack.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no CONNACK within %s s" % timeout) from None

    def message(self, timeout=10):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no message within %s s" % timeout) from None

    def publish(self, topic, payload, qos=1, timeout=10):
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout)
        return info

    def close(self):
        with contextlib.suppress(OSError, ValueError):
            self.client.disconnect()
        self.client.loop_stop()


# ---- device-side helpers built on the emulator's own signer (tools/emulator/sign.py) ----


def register_identity(
    pk, dn, ps, auth_type="register", method="hmacsha256", random="r4nd0m1234", securemode="2", upper=False
):
    """(clientId, username, password) of a dynamic-registration CONNECT."""
    from tools.emulator.sign import sign

    client_id = "%s.%s|securemode=%s,authType=%s,signmethod=%s,random=%s|" % (
        dn,
        pk,
        securemode,
        auth_type,
        method,
        random,
    )
    password = sign(method, ps, {"deviceName": dn, "productKey": pk, "random": random})
    return client_id, "%s&%s" % (dn, pk), password.upper() if upper else password


def secret_identity(
    pk, dn, ds, method="hmacsha256", timestamp="2524608000000", securemode="2", upper=False, prefix=None
):
    """(clientId, username, password) of a normal CONNECT with a DeviceSecret."""
    from tools.emulator.sign import sign

    prefix = prefix or "%s.%s" % (pk, dn)
    params = {"clientId": prefix, "deviceName": dn, "productKey": pk}
    opts = "securemode=%s,signmethod=%s" % (securemode, method)
    if timestamp is not None:
        params["timestamp"] = timestamp
        opts += ",timestamp=%s" % timestamp
    password = sign(method, ds, params)
    return "%s|%s|" % (prefix, opts), "%s&%s" % (dn, pk), password.upper() if upper else password


def mqtt_register(emu, pk, dn, ps, auth_type="register", tls=True, keepalive=60, disconnect=True, **kw):
    """Register over MQTT with paho. Returns (connack_rc, topic, reply dict or None)."""
    identity = register_identity(pk, dn, ps, auth_type=auth_type, **kw)
    dev = PahoDevice(emu, *identity, tls=tls, keepalive=keepalive)
    try:
        rc = dev.connect()
        if rc != 0:
            return rc, None, None
        topic, payload = dev.message()
        return rc, topic, json.loads(payload)
    finally:
        if disconnect:
            dev.close()
        else:
            dev.client.loop_stop()


def mqtt_connect(emu, pk, dn, ds, tls=True, keepalive=60, **kw):
    """Connect with a DeviceSecret; returns (rc, PahoDevice). The caller closes the device."""
    securemode = "2" if tls else "3"
    identity = secret_identity(pk, dn, ds, securemode=securemode, **kw)
    dev = PahoDevice(emu, *identity, tls=tls, keepalive=keepalive)
    return dev.connect(), dev
