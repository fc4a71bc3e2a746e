"""The console's side for your own application: publish to a device's topic, and the device's message log.

`publish PK/DN TOPIC PAYLOAD` is the console's "publish to a topic": the running emulator sends PAYLOAD at
QoS 0 through its broker, so only a live device subscribed to a matching topic gets it. `messages PK/DN`
shows what a device published (newest first, payloads shown); `--all` adds what the platform sent it
(property post replies, property sets, publishes). The running emulator keeps the last `KEPT` messages of
each device in `messages.json` in the state directory; registration replies are never recorded.
"""

import argparse
import contextlib
import json
import os
import sys
import time
from collections import deque

from . import registry
from .registry import RegistryError

FILE = "messages.json"
KEPT = 50  # per device, both directions together
PAYLOAD_KEPT = 1024  # bytes of each payload kept (its full length is recorded)
_PUBLISH_RESULTS_KEPT = 50

HELP = """\
  publish PK/DN TOPIC PAYLOAD [--wait S]
                                   the console's "publish to a topic": PAYLOAD (text, sent as UTF-8) at QoS 0
                                   to the live device on TOPIC (/PK/DN/user/... or /sys/PK/DN/...);
                                   exit 3: offline, or not subscribed to TOPIC
  messages PK/DN [--all] [--limit N] [--json]
                                   what the device published, newest first (--all: also what it was sent)
"""


def add_parsers(sub):
    pb = sub.add_parser("publish", help="publish to a live device's topic, as the console does")
    pb.add_argument("target", type=_target, metavar="PK/DN")
    pb.add_argument("topic", metavar="TOPIC")
    pb.add_argument("payload", metavar="PAYLOAD")
    pb.add_argument("--wait", type=float, default=10.0, metavar="S",
                    help="seconds to wait for the running emulator to send it (default 10)")
    ms = sub.add_parser("messages", help="what a device published, newest first")
    ms.add_argument("target", type=_target, metavar="PK/DN")
    ms.add_argument("--all", action="store_true", help="also what the platform sent the device")
    ms.add_argument("--limit", type=_positive, default=20, metavar="N",
                    help="at most N messages (default 20)")
    ms.add_argument("--json", action="store_true", help="one JSON list (payloads as text or hex)")
    return pb, ms


def _target(text):
    pk, slash, dn = text.partition("/")
    if not slash or not pk or not dn or "=" in text:
        raise argparse.ArgumentTypeError("expected PK/DN")
    return pk, dn


def _positive(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at least 1")
    return n


def own_topic(pk, dn, topic):
    """Whether topic is in the device's topic space (the console publishes nowhere else)."""
    if "+" in topic or "#" in topic:
        return False
    return topic.startswith(("/%s/%s/" % (pk, dn), "/sys/%s/%s/" % (pk, dn))) and not topic.endswith("/")


def run(store, args):
    """The `publish` and `messages` subcommands; returns the exit code."""
    pk, dn = args.target
    key = registry.device_key(pk, dn)
    if key not in store.read()["devices"]:
        raise RegistryError("unknown device %s (add it with: device %s)" % (key, key))
    if args.cmd == "messages":
        return _messages(store, key, args)
    return _publish(store, key, args)


def _publish(store, key, args):
    pk, dn = args.target
    if not own_topic(pk, dn, args.topic):
        raise RegistryError("topic %r is not %s's: use /%s/%s/user/<name> (or /sys/%s/%s/...), no wildcards"
                            % (args.topic, key, pk, dn, pk, dn))
    payload = args.payload.encode()
    mid = "p%d" % (time.time_ns() // 1000 % 10**12)
    with store.edit() as data:
        data.setdefault("downlink", []).append({"kind": "publish", "target": key, "id": mid,
                                                "topic": args.topic, "payload_hex": payload.hex()})
    deadline = time.monotonic() + max(args.wait, 0.1)
    while time.monotonic() < deadline:
        res = store.read().get("publish_results", {}).get(mid)
        if res is not None:
            if res.get("error") == "offline":
                print("emulator: %s is offline: nothing published" % key, file=sys.stderr)
                return 3
            if not res.get("subscribed"):
                print("emulator: %s is online but not subscribed to %s: the message was dropped (QoS 0)"
                      % (key, args.topic), file=sys.stderr)
                return 3
            print("published %d bytes on %s to %s" % (len(payload), args.topic, key))
            return 0
        time.sleep(0.05)
    with store.edit() as data:  # not sent later by an emulator started after this gave up
        data["downlink"] = [d for d in data.get("downlink", []) if d["id"] != mid]
    print("emulator: nothing published to %s within %g s (is an emulator serving this --state?)"
          % (key, args.wait), file=sys.stderr)
    return 3


def _messages(store, key, args):
    rows = [m for m in reversed(read_log(store.dir).get(key, [])) if args.all or m["dir"] == "up"]
    rows = rows[: args.limit]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no messages %s %s yet" % ("to or from" if args.all else "from", key), file=sys.stderr)
        return 0
    for m in rows:
        print(format_row(m))
    return 0


def format_row(m):
    """One message as a line: time, direction, topic, length, payload."""
    t = time.strftime("%H:%M:%S", time.localtime(m["t"])) + ".%03d" % (m["t"] * 1000 % 1000)
    arrow = "device->" if m["dir"] == "up" else "->device"
    shown = m["text"] if m.get("text") is not None else "hex:" + m["hex"]
    more = " ..." if m["len"] > PAYLOAD_KEPT else ""
    return "%s  %s  %s  %d B  %s%s" % (t, arrow, m["topic"], m["len"], shown, more)


def read_log(state_dir):
    try:
        with open(os.path.join(state_dir, FILE), encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryError("cannot read %s: %s" % (FILE, e)) from e
    return data if isinstance(data, dict) else {}


class MessageLog:
    """The running emulator's record of each device's messages: the last KEPT, in messages.json."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, FILE)
        self.logs = {}
        with contextlib.suppress(RegistryError):
            for key, rows in read_log(state_dir).items():
                self.logs[key] = deque(rows, KEPT)

    def record(self, key, direction, topic, payload):
        payload = bytes(payload)
        head = payload[:PAYLOAD_KEPT]
        try:
            text, hexed = head.decode(), None
        except UnicodeDecodeError:
            text, hexed = None, head.hex()
        row = {"t": round(time.time(), 3), "dir": direction, "topic": topic, "len": len(payload),
               "text": text}
        if hexed is not None:
            row["hex"] = hexed
        self.logs.setdefault(key, deque(maxlen=KEPT)).append(row)
        self._write()

    def _write(self):
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({k: list(v) for k, v in self.logs.items()}, f)
        os.replace(tmp, self.path)


def record_result(data, mid, result):
    """Note the fate of a queued publish (registry dict, inside Store.edit())."""
    results = data.setdefault("publish_results", {})
    results[mid] = result
    for old in list(results)[:-_PUBLISH_RESULTS_KEPT]:
        del results[old]
