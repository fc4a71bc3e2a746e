"""The emulator's console for your own application, with a paho-mqtt 2 device: `device` says what it did,
`publish` reaches a subscribed live device (and says when it cannot), `messages` shows what the device
published, newest first, payloads included, and keeps a bounded history."""

import json
import secrets

from host_tests.plugins.emulator import mqtt_connect
from tools.emulator import console

DS = "KnownSecretForTests0123456789abc"


def test_device_says_what_it_did(prod):
    emu, pk, _ = prod
    r = emu.cli("device", "%s/new-dev-1" % pk)
    added = "device %s/new-dev-1 added (pre-registered); dynamic registration is on for %s" % (pk, pk)
    assert r.stdout.strip() == added
    r = emu.cli("device", "%s/new-dev-1" % pk)
    assert r.stdout.strip() == "device %s/new-dev-1 exists (not activated): kept" % pk
    r = emu.cli("device", "%s/new-dev-2=%s" % (pk, DS))
    assert r.stdout.startswith("device %s/new-dev-2 added (pre-registered); DeviceSecret set (32 chars" % pk)
    assert DS not in r.stdout + r.stderr


def test_publish_to_a_subscribed_device_and_its_messages(prod):
    emu, pk, _ = prod
    dn = "app-" + secrets.token_hex(3)
    key = "%s/%s" % (pk, dn)
    emu.add_device(pk, dn, secret=DS)
    down, up = "/%s/%s/user/get" % (pk, dn), "/%s/%s/user/update" % (pk, dn)

    r = emu.cli("publish", key, down, "hello", "--wait", "5", check=False)
    assert r.returncode == 3 and "offline" in r.stderr
    rc, dev = mqtt_connect(emu, pk, dn, DS)
    try:
        assert rc == 0
        r = emu.cli("publish", key, down, "before", "--wait", "5", check=False)
        assert r.returncode == 3 and "not subscribed to %s" % down in r.stderr
        granted = []
        dev.client.on_subscribe = lambda c, u, m, codes, p: granted.extend(codes)
        dev.client.subscribe(down, qos=0)
        _until(lambda: granted)
        payload = '{"temp": "21°C"}'
        r = emu.cli("publish", key, down, payload, "--wait", "5")
        assert r.stdout.strip() == "published %d bytes on %s to %s" % (len(payload.encode()), down, key)
        assert dev.message(5) == (down, payload.encode())
        r = emu.cli("publish", key, "/%s/other-dev/user/get" % pk, "x", check=False)
        assert r.returncode == 2 and "is not %s's" % key in r.stderr

        dev.publish(up, b"first")
        dev.publish(up, b"\xff\x00binary")
        dev.publish(up, b"third")
    finally:
        dev.close()
    rows = _until(lambda: json.loads(emu.cli("messages", key, "--json").stdout), n=3)
    assert [(m["topic"], m["text"], m.get("hex")) for m in rows] == [
        (up, "third", None), (up, None, "ff0062696e617279"), (up, "first", None)]
    text = emu.cli("messages", key, "--limit", "2").stdout.splitlines()
    assert len(text) == 2 and text[0].endswith("device->  %s  5 B  third" % up)
    both = json.loads(emu.cli("messages", key, "--all", "--json").stdout)
    assert ("down", down, '{"temp": "21°C"}') in [(m["dir"], m["topic"], m["text"]) for m in both]


def test_message_history_is_bounded(tmp_path):
    log = console.MessageLog(str(tmp_path))
    for i in range(console.KEPT + 10):
        log.record("pk/dn-1", "up", "/pk/dn-1/user/x", b"%d" % i + b"." * 2000)
    rows = console.read_log(str(tmp_path))["pk/dn-1"]
    assert len(rows) == console.KEPT
    assert rows[-1]["len"] == 2000 + len(str(console.KEPT + 9))
    assert len(rows[-1]["text"]) == console.PAYLOAD_KEPT and rows[0]["text"].startswith("10.")
    assert console.format_row(rows[-1]).endswith(" ...")


def test_messages_of_an_unknown_device(prod):
    emu, pk, _ = prod
    r = emu.cli("messages", "%s/nobody-9" % pk, check=False)
    assert r.returncode == 2 and "unknown device %s/nobody-9" % pk in r.stderr


def _until(fn, n=1, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_publish_with_no_emulator_serving_is_said_and_not_left_queued(tmp_path):
    import subprocess
    import sys

    from tools.devrun import REPO

    def emu(*args):
        argv = [sys.executable, "-m", "tools.emulator", "--state", str(tmp_path), *args]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)

    assert emu("--product", "a1PK=Secret1", "device", "a1PK/dev-0001").returncode == 0
    r = emu("publish", "a1PK/dev-0001", "/a1PK/dev-0001/user/get", "x", "--wait", "0.3")
    assert r.returncode == 3 and "nothing published to a1PK/dev-0001 within 0.3 s" in r.stderr
    assert json.loads((tmp_path / "registry.json").read_text()).get("downlink") == []
    r = emu("messages", "a1PK/dev-0001")
    assert r.returncode == 0 and r.stdout == "" and "no messages from a1PK/dev-0001 yet" in r.stderr
