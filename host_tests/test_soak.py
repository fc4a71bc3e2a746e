"""The life after online: the real main.py loop, TLS on, on both runtimes, for about a minute.

A healthy stretch first (posts, a property set from the "console", idle waits): no reconnect, a bounded
number of check() calls per second. Then one fault after another, each of which the device must survive
by itself: a refused subscription (reported, tried again at each connection), a refused post, a kick-off by
a second login, a network outage (a half-open link: bytes vanish, nothing closes), and an outage after which
the platform refuses the credential twice (CONNACK 4). The heap stays flat and the watchdog is fed throughout.

The device runs host_tests/device/soak.py: the firmware's own main.py, with its post interval shortened,
wrapped in counters that print one SOAK line a second.
"""

import json
import re
import subprocess
import threading
import time

import pytest

from host_tests.plugins.emulator import mqtt_connect
from host_tests.plugins.firmware import board_flash
from host_tests.plugins.runtimes import FIRMWARE, build_command, device_script
from tools.faultproxy import FaultProxy

PK = "a1SoakTest01"
PS = "soak-product-secret-0123"
POST_MS = 2000
_STAT = re.compile(r"^SOAK (.*)$")


class Device:
    """The soak script running on a runtime; its console is read on a thread, line by line."""

    def __init__(self, runtime, flash):
        argv, env = build_command(runtime, device_script("soak.py"))
        self.proc = subprocess.Popen(argv, cwd=flash, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace")
        self.flash = flash
        self.lines = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cv.notify_all()

    def mark(self):
        with self._cv:
            return len(self.lines)

    def wait(self, pred, timeout, what, since=None):
        """The first line from now on (or from mark `since`) for which pred(line) is true; fails after
        timeout seconds."""
        with self._cv:
            start = len(self.lines) if since is None else since
            deadline = time.monotonic() + timeout
            while True:
                for _, line in self.lines[start:]:
                    if pred(line):
                        return line
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail("%s: not seen within %ss (exit %s)\n%s" % (what, timeout, self.proc.poll(),
                                                                          self.console()[-4000:]))
                self._cv.wait(min(left, 0.2))

    def stat(self, timeout=5):
        """The next SOAK line as a dict of ints."""
        line = self.wait(lambda ln: ln.startswith("SOAK "), timeout, "a SOAK line")
        return {k: int(v) for k, v in (kv.split("=") for kv in line[5:].split())}

    def online_again(self, connects, timeout):
        """Wait for connection number `connects` and then an acknowledged post on it."""
        self.wait(lambda ln: ln.endswith("connected (connection %d)" % connects), timeout,
                  "connection %d" % connects)
        self.wait(lambda ln: ln == "SOAK-POST ok", timeout, "a post acknowledged on connection %d" % connects)

    def console(self):
        with self._cv:
            return "\n".join(line for _, line in self.lines)

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


def test_main_loop_lives_through_faults(runtime, flash, emulator, secret_guard, record_property):
    emu = emulator(products={PK: PS})
    dn = "soak-" + runtime[:2]
    emu.add_device(PK, dn)
    key = "%s/%s" % (PK, dn)
    main = (FIRMWARE / "main.py").read_text()
    assert "_POST_EVERY_MS = const(60000)" in main
    (flash / "main.py").write_text(main.replace("const(60000)", "const(%d)" % POST_MS))
    with FaultProxy(("127.0.0.1", emu.port)) as proxy:
        board_flash(emu, flash, product_key=PK, product_secret=PS, device_name=dn, port=proxy.port,
                    keepalive=30, timeout=3, backoff_ms=200, retry_cap_s=2, refused_cap_s=3, wdt_s=30)
        dev = Device(runtime, flash)
        try:
            _soak(dev, emu, proxy, key, dn, record_property, runtime)
        finally:
            dev.stop()
            secret_guard.secret(PS, (emu.device(PK, dn) or {}).get("secret"))
            secret_guard.output(dev.console(), emu.log())


def _soak(dev, emu, proxy, key, dn, record_property, runtime):
    dev.wait(lambda ln: "state online " in ln, 30, "state online")
    first = dev.stat()

    # ---- healthy: posts every 2 s, a property set from the console between two posts
    dev.wait(lambda ln: ln == "SOAK-POST ok", 10, "a periodic post")
    t0 = time.monotonic()
    mark = dev.mark()
    res = emu.cli("set", key, '{"LightSwitch": 1}', "--wait", "10", check=False)
    set_s = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    reply = json.loads(res.stdout)
    assert reply["code"] == 200 and reply["version"] == "1.0", reply
    dev.wait(lambda ln: ln == "app: property set LightSwitch", 2, "the application's handler", mark)
    for _ in range(3):
        dev.wait(lambda ln: ln == "SOAK-POST ok", 10, "a periodic post")
    healthy = dev.stat()
    span_s = healthy["up"] - first["up"]
    rate = (healthy["checks"] - first["checks"]) / max(span_s, 1)
    assert healthy["connects"] == 1, dev.console()  # not one reconnect on a healthy link
    assert healthy["failed"] == 0
    assert rate <= 3, "check() ran %.1f times a second: the loop spins" % rate
    assert "link lost" not in dev.console()

    # ---- the application's own failures: reported, the session carries on
    (dev.flash / "soak.cmd").write_text("subscribe /sys/a1OtherProd9/other-device/thing/event/x\n")
    dev.wait(lambda ln: ln.startswith("aliyun_iot: application error suback"), 10, "the SUBACK refusal")
    mark = dev.mark()
    emu.fault(key, "--on", "connect", "--reply-code", "429", "--times", "1")
    dev.wait(lambda ln: ln == "SOAK-POST failed post429", 10, "the refused post", mark)
    dev.wait(lambda ln: ln == "app: post failed (post429)", 2, "the application's report", mark)
    dev.wait(lambda ln: ln == "SOAK-POST ok", 10, "the next post")
    assert dev.stat()["connects"] == 1

    # ---- a second login with the same credential kicks the device off; it comes back by itself
    rc, other = mqtt_connect(emu, *key.split("/"), emu.device(*key.split("/"))["secret"])
    try:
        assert rc == 0
        dev.online_again(2, 20)
    finally:
        other.close()

    # ---- an outage: a half-open link (a post goes unanswered, the PINGRESP never comes)
    proxy.outage(True)
    dev.wait(lambda ln: "link lost (ping)" in ln, 30, "the dead link noticed by the missing PINGRESP")
    time.sleep(4)  # reconnect attempts meet the outage
    # Read while the outage lasts: no connection can be counted before it ends. A connection attempt
    # holds the loop up to its deadline, 3 x timeout (9 s), feeding the watchdog.
    st = dev.stat(12)
    proxy.outage(False)
    dev.online_again(st["connects"] + 1, 30)

    # ---- an outage after which the platform refuses the credential twice (console: device disabled)
    proxy.outage(True)
    dev.wait(lambda ln: "link lost" in ln, 30, "the dead link")
    emu.fault(key, "--on", "connect", "--refuse", "4", "--times", "2")
    mark = dev.mark()
    st = dev.stat(12)  # read while the outage lasts (the refusals and the reconnection take under a second)
    proxy.outage(False)
    dev.online_again(st["connects"] + 1, 30)
    refusals = [ln for _, ln in dev.lines[mark:] if "connect failed (connack4)" in ln]
    assert len(refusals) == 2, dev.console()
    assert emu.registry()["faults"].get(key) is None  # both refusals were used up

    # ---- and still healthy: posts flow, the refused subscription is tried again at each connection
    for _ in range(2):
        dev.wait(lambda ln: ln == "SOAK-POST ok", 10, "a post after the faults")
    last = dev.stat()
    console = dev.console()
    assert console.count("application error suback") >= 2, "refused subscription not tried again"
    assert "watchdog reset" not in console and last["gap"] < 30000
    heaps = [int(m.group(1)) for m in re.finditer(r"^SOAK .*heap=(-?\d+)", console, re.M)]
    if runtime == "micropython":
        # Flat once every path has run: from the first reconnect on (which loads what a reconnect
        # needs once) through two outages and two refusals, the online heap does not grow.
        warm = console[console.index("connected (connection 2)"):]
        after = [int(m.group(1)) for m in re.finditer(r"^SOAK .*online=1 heap=(\d+)", warm, re.M)]
        growth = max(after[-4:]) - max(after[:4])
        assert growth < 1024, "heap grew %d bytes over the soak: %s" % (growth, heaps)
    record_property("measure", "soak %s: %d s, %d connections, %.1f check()/s healthy, property set reply "
                    "%.2f s, heap first/last %d/%d B, longest watchdog gap %d ms"
                    % (runtime, last["up"], last["connects"], rate, set_s, heaps[0], heaps[-1], last["gap"]))
