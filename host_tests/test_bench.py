"""make bench stays runnable: one short pass (RTT 0, one run each) produces every figure. Its numbers are
reported, never asserted: speed is the benchmark's business, not a test's."""

import json
import subprocess
import sys

import pytest

from host_tests.plugins.runtimes import REPO


@pytest.mark.slow
def test_bench_short_pass_produces_every_figure(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--rtt", "0", "--repeat", "1", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "bench.json").read_text())
    assert {(row["client"], row["rtt_ms"]) for row in res["rows"]} == {("firmware", 0), ("sdk", 0)}
    for row in res["rows"]:
        assert all(row[s] >= 0 for s in ("registered", "connected", "acked"))
        assert row["registered"] > 0 and row["connected"] > 0
    assert set(res["mpy_bytes"]) == {"xtensawin", "rv32imc"}
    assert 8 < res["min_heap_kib"] < 256
    assert res["peak_heap_bytes"] > 0
    ram = res["ram"]
    assert ram["baseline_kib"] < ram["normal_kib"] <= ram["first_kib"] + 8
    assert ram["first_boot_code_held"] == []
    assert ram["mpy_normal_boot"] < ram["mpy_package"]
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "floor" in r.stdout and "smallest -X heapsize" in r.stdout and "normal boot" in r.stdout
    # Each goal is marked met or missed, in the JSON and in the table.
    assert set(res["goals"]) == {"normal_x", "first_x", "held_over_baseline", "mpy_normal_boot",
                                 "mpy_package"}
    assert all(g["met"] == (g["value"] <= g["goal"]) for g in res["goals"].values())
    assert r.stdout.count("goal ") == 5 and r.stdout.count(": met") + r.stdout.count(": MISSED") == 5
    # One whole OTA update: every phase timed, in order (the whole no less than its parts); its smallest heap
    # above a normal boot's with the service, which is above one without; the service holds a little.
    ota = res["ota"]
    assert ota["rtt_ms"] == 0 and len(ota["runs"]) == 1 and ota["size"] > 10000
    phases = ("task", "switched", "online", "kept", "informed")
    assert all(ota["ms"][k] >= 0 for k in phases) and ota["ms"]["switched"] > 0 and ota["ms"]["online"] > 0
    assert ota["ms"]["total"] >= sum(ota["ms"][k] for k in phases) - 1
    assert ram["baseline_bytes"] < ota["plain_bytes"] <= ota["hook_bytes"] < ota["update_bytes"] < 262144
    assert ota["update_bytes"] % ota["step_bytes"] == 0 and ota["bench_seconds"] > 0
    assert 0 < ota["hook_held_extra"] < 4096 and ota["plain_held"] > ram["baseline_held"]
    assert "OTA UPDATE" in r.stdout and "whole update (both boots)" in r.stdout
    # Each client's floor is one its median can reach: the SDK's TLS 1.3 floor is lower than the firmware's.
    assert "firmware (TLS 1.2)" in r.stdout and "sdk (TLS 1.3)" in r.stdout
    tls = res["tls"]
    if "unavailable" in tls:
        assert "TLS MEMORY: not measured" in r.stdout
        return
    # mbedTLS's own memory: both record buffers held while connected, the handshake above that, a second
    # session on top, no buffer left once everything is closed; the budget adds it to the GC heap's edge.
    assert tls["held_connected"] > 16384 + 4096 and tls["handshake_peak"] > tls["held_connected"]
    assert tls["first_boot_peak"] >= tls["handshake_peak"] and tls["second_peak_extra"] > 16384 + 4096
    assert tls["held_after_close"] < 4096
    b = res["budget"]
    need = ram["normal_kib"] + tls["handshake_peak"] / 1024
    assert b["normal"]["needed_kib"] == pytest.approx(need, abs=0.02)
    assert b["normal"]["left_kib"] == pytest.approx(230 - 16 - b["normal"]["needed_kib"], abs=0.02)
    assert "TLS MEMORY" in r.stdout and "BOARD BUDGET" in r.stdout and "left for the application" in r.stdout


def test_ram_tool_refuses_a_wrong_build_in_one_line(tmp_path):
    # --exe and --frozen (tools/unix32.sh builds): a careless call gets one line and exit 2, before anything
    # starts.
    not_exe = tmp_path / "micropython"
    not_exe.write_text("not a program")
    for args, says in ((["--frozen"], "--frozen needs --exe"),
                       (["--exe", str(tmp_path / "none")], "is not an executable file"),
                       (["--exe", str(not_exe)], "is not an executable file"),
                       (["--no-tl"], "unrecognized arguments: --no-tl")):
        r = subprocess.run([sys.executable, "-m", "tools.ram", *args], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and says in r.stderr.strip().splitlines()[-1], (args, r.stderr)
