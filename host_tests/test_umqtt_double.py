"""The umqtt.simple test double, on both runtimes and for every API generation.

A real broker (amqtt, in-process, plain TCP and TLS listeners on ephemeral ports) and a raw
CONNACK server (answers by client id: rc<N>, short, eof, quiet) stand on the other side; the
checks themselves run in host_tests/device/umqtt_double.py.
"""

import asyncio
import json
import ssl
import threading
import uuid

import pytest
import trustme

from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script
from host_tests.plugins.wire import tcp_server

GENERATIONS = ("1.3.4", "1.4.0", "1.6.0", "1.7.0", "1.8.0")

# every check the device script must have passed, per generation
_COMMON = {
    "api",
    "port default plain",
    "port default tls",
    "subscribe needs a callback",
    "connect error propagates",
    "socket calls",
    "failed socket left to caller",
    "connect",
    "subscribe",
    "publish qos1 acked",
    "round trip",
    "check_msg idle",
    "pingresp",
    "disconnect",
    "refused rc2",
    "refused rc2 code",
    "refused rc4",
    "refused rc4 code",
    "short connack",
    "eof connect",
    "end of stream",
    "end of stream code",
    "quiet connect",
    "check_msg nothing waiting",
    "publish str counted in characters",
    "publish str written as UTF-8",
    "topic length in characters",
    "publish bytes consistent",
    "connect via wire",
    "client id length in characters",
    "connect length in characters",
    "old socket closed on connect",
    "qos1 past 65535 never acked",
    "qos1 past 65535 ran into end of stream",
}
_LEGACY = {"connect has no timeout", "no unsubscribe"}
_NEWER = {"init takes ssl_params", "tls context connect", "tls legacy connect", "tls context wrong ca"}
EXPECTED = {
    "1.3.4": _COMMON
    | _LEGACY
    | {"init takes ssl_params", "tls legacy connect", "tls legacy wrong ca"},
    "1.4.0": _COMMON
    | _LEGACY
    | {"init has no ssl_params", "tls context connect", "tls ssl=True unsupported", "tls context wrong ca"},
    "1.6.0": _COMMON | _NEWER | {"no unsubscribe"},
    "1.7.0": _COMMON | _NEWER | {"unsubscribe"},
    "1.8.0": _COMMON | _NEWER | {"unsubscribe"},
}


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    (d / "ca.der").write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    other = trustme.CA()
    (d / "wrong_ca.der").write_bytes(ssl.PEM_cert_to_DER_cert(other.cert_pem.bytes().decode()))
    return d


@pytest.fixture(scope="session")
def broker(pki):
    """amqtt broker in a background thread: {"tcp": port, "tls": port}."""
    from amqtt.broker import Broker

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state = {}

    async def start():
        try:
            pem = str(pki / "server.pem")
            b = Broker(
                {
                    "listeners": {
                        "default": {"type": "tcp", "bind": "127.0.0.1:0"},
                        "tls": {
                            "type": "tcp",
                            "bind": "127.0.0.1:0",
                            "ssl": True,
                            "certfile": pem,
                            "keyfile": pem,
                        },
                    },
                    "plugins": {
                        "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                    },
                }
            )
            await b.start()
            state["broker"] = b
            for name in ("default", "tls"):
                state[name] = b._servers[name].instance.sockets[0].getsockname()[1]
        except Exception as e:  # reported to the fixture below
            state["error"] = e
        finally:
            ready.set()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=run, name="amqtt", daemon=True)
    t.start()
    if not ready.wait(30) or "error" in state:
        pytest.fail("amqtt broker did not start: %r" % state.get("error"))
    yield {"tcp": state["default"], "tls": state["tls"]}
    asyncio.run_coroutine_threadsafe(state["broker"].shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def _read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _serve_raw(conn):
    # Read one CONNECT, then answer according to the client id.
    with conn:
        conn.settimeout(10)
        try:
            if _read_exact(conn, 1) != b"\x10":
                return
            size, shift = 0, 0
            while True:
                b = _read_exact(conn, 1)[0]
                size |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            body = _read_exact(conn, size)
            n = int.from_bytes(body[10:12], "big")
            client_id = body[12 : 12 + n].decode()
            if client_id.startswith("rc"):
                conn.sendall(bytes((0x20, 2, 0, int(client_id[2:]))))
            elif client_id == "short":
                conn.sendall(b"\x20\x02")
                return
            elif client_id == "eof":
                conn.sendall(b"\x20\x02\x00\x00")
                return
            else:  # quiet: accept, then say nothing until the client goes
                conn.sendall(b"\x20\x02\x00\x00")
            while conn.recv(512):
                pass
        except (OSError, ConnectionError):
            pass


@pytest.fixture(scope="session")
def raw_server():
    """A raw MQTT server that answers a CONNECT as its client id says (a fixture, not a broker)."""
    with tcp_server(_serve_raw, "raw-connack") as port:
        yield port


@pytest.mark.parametrize("api", GENERATIONS)
def test_double(runtime, api, broker, raw_server, pki, tmp_path):
    params = {
        "api": api,
        "host": "127.0.0.1",
        "tcp_port": broker["tcp"],
        "tls_port": broker["tls"],
        "raw_port": raw_server,
        "ca": str(pki / "ca.der"),
        "wrong_ca": str(pki / "wrong_ca.der"),
        "topic": "test/" + uuid.uuid4().hex[:8],
    }
    pfile = tmp_path / "params.json"
    pfile.write_text(json.dumps(params))
    res = run_script(
        runtime, device_script("umqtt_double.py"), env={"UMQTT_API": api}, args=[pfile], timeout=60
    )
    oks = set(assert_device_ok(res))
    missing = EXPECTED[api] - oks
    assert not missing, "checks that did not run: %s\n%s" % (sorted(missing), res.stdout)


def test_unknown_generation_is_refused(runtime):
    res = run_script(runtime, "import umqtt.simple\n", env={"UMQTT_API": "9.9"})
    assert res.rc != 0
    assert "UMQTT_API must be one of" in res.stdout + res.stderr


def _serve_stream(conn):
    with conn:
        conn.settimeout(10)
        try:
            conn.sendall(b"abcxyz\nrest")
            got = _read_exact(conn, 2)
            conn.settimeout(0.2)  # anything after b"go" means write(buf, n) sent too much
            try:
                extra = conn.recv(16)
            except TimeoutError:
                extra = b""
            conn.sendall(b"end" if got == b"go" and not extra else b"bad")
        except (OSError, ConnectionError):
            pass


@pytest.fixture(scope="session")
def stream_server():
    """Sends b"abcxyz\\nrest", waits for exactly b"go", sends b"end" and closes."""
    with tcp_server(_serve_stream, "stream") as port:
        yield port


PARITY = {
    "argv", "getenv", "cwd is the flash", "machine is the shim", "umqtt is the double", "import tls",
    "no host packages", "ticks_add/diff", "ticks_diff negative", "sleep_ms",
    "read(n) waits for n", "readline", "readinto", "readinto data", "non-blocking read, nothing there",
    "read timeout", "read timeout errno", "write(buf, n)", "read(n) stops at EOF", "read at EOF",
    "no ssl.SSLError", "ssl.wrap_socket", "client context starts with CERT_NONE",
    "tls verified", "tls roots loaded one per call", "tls wrong root", "tls wrong hostname",
    "tls concatenated DER trusts the first only", "tls to a non-TLS server", "tls error is an mbedTLS code",
}  # fmt: skip


def test_cpython_shims_behave_like_the_unix_port(runtime, broker, stream_server, pki, flash, tmp_path):
    """The double stands on the shims: socket, ssl and ticks must act the same on both runtimes."""
    params = {
        "stream_port": stream_server,
        "tls_port": broker["tls"],
        "ca": str(pki / "ca.der"),
        "wrong_ca": str(pki / "wrong_ca.der"),
    }
    pfile = tmp_path / "params.json"
    pfile.write_text(json.dumps(params))
    res = run_script(
        runtime,
        device_script("shim_parity.py"),
        cwd=flash,
        env={"HARNESS_PROBE": "42"},
        args=[pfile, "two words"],
    )
    missing = PARITY - set(assert_device_ok(res))
    assert not missing, "checks that did not run: %s\n%s" % (sorted(missing), res.stdout)
