"""tools/deploy.py's look at the board before it writes anything (one mpremote exec): the .mpy version
the board reads, umqtt.simple's generation, free flash and heap; and what deploy never writes: a main.py
or boot.py of the board's own (unless forced), config.json, the credential (also not through --ca).
Against virtual boards (the MicroPython unix port) through the real mpremote."""

import os
import subprocess
import sys

import pytest

from tools import board as B
from tools import deploy as D

# A boot.py that makes the unix port look like an older firmware to code that runs after it (deploy's
# probe): `import sys` gets a stand-in whose sys.implementation reads .mpy v5, as MicroPython 1.18 does.
OLD_FIRMWARE_BOOT = """
import builtins
import sys

_real_sys = sys
_real_import = builtins.__import__


class _Impl:
    name = "micropython"
    version = (1, 18, 0, "")
    _mpy = 5 | (10 << 10)
    _machine = "ESP32 module with ESP32"


class _Sys:
    implementation = _Impl()

    def __getattr__(self, name):
        return getattr(_real_sys, name)


_fake_sys = _Sys()


def _import(name, *args):
    return _fake_sys if name == "sys" else _real_import(name, *args)


builtins.__import__ = _import
"""

USER_MAIN = b"# my own application\nimport time\nprint('hello from my app')\n"


def deploy(url, *args):
    argv = [sys.executable, "-m", "tools.deploy", "--board", "VIRTUAL", "--port", url, "--no-reset"]
    return subprocess.run(
        [*argv, *map(str, args)],
        cwd=B.REPO, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def listing(flash):
    return sorted(str(p.relative_to(flash)) for p in flash.rglob("*"))


def test_deploy_refuses_a_board_that_reads_another_mpy_version(vboard):
    vb = vboard()
    (vb.flash / "boot.py").write_text(OLD_FIRMWARE_BOOT)
    before = listing(vb.flash)
    p = deploy(vb.url)
    assert p.returncode == 1, p.stderr
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith(
        "deploy: error: the board's MicroPython 1.18.0 reads .mpy v5, our mpy-cross emits v6"
    )
    assert "--source" in err[-1] and "make flash" in err[-1]
    assert listing(vb.flash) == before and (vb.flash / "boot.py").read_text() == OLD_FIRMWARE_BOOT
    # the fix it names works: source files need no particular .mpy version
    p = deploy(vb.url, "--source")
    assert p.returncode == 0, p.stderr
    assert "not checked: no .mpy in this deploy" in p.stderr
    assert (vb.flash / "lib" / "aliyun_iot" / "config.py").exists()
    assert (vb.flash / "boot.py").read_text() == OLD_FIRMWARE_BOOT  # the board's own boot.py is kept


def test_deploy_keeps_the_boards_own_main_py_unless_forced(vboard):
    vb = vboard()
    (vb.flash / "main.py").write_bytes(USER_MAIN)
    p = deploy(vb.url, "--no-package")
    assert p.returncode == 0, p.stderr
    assert "kept the board's own main.py (not a version of ours; --force-main replaces it)" in p.stderr
    assert (vb.flash / "main.py").read_bytes() == USER_MAIN
    assert (vb.flash / "boot.py").read_bytes() == (B.FIRMWARE / "boot.py").read_bytes()  # none there: ours
    summary = [ln for ln in p.stderr.splitlines() if ln.startswith("deploy: board: ")]
    assert len(summary) == 1 and "umqtt.simple 1.6" in summary[0] and ".mpy v6." in summary[0]
    p = deploy(vb.url, "--no-package", "--force-main")
    assert p.returncode == 0, p.stderr
    assert (vb.flash / "main.py").read_bytes() == (B.FIRMWARE / "main.py").read_bytes()
    # ours now: a later deploy updates it without being told
    assert D.known_versions("main.py") >= {
        __import__("hashlib").sha256((vb.flash / "main.py").read_bytes()).hexdigest()
    }


def test_deploy_ca_goes_to_its_fixed_name_never_over_config_or_credential(vboard, tmp_path):
    vb = vboard()
    config = b'{"product_key": "a1PK", "product_secret": "x"}\n'
    cred = b'{"v": 1}\n'
    (vb.flash / "config.json").write_bytes(config)
    (vb.flash / B.CRED_PATH).write_bytes(cred)
    for name in ("config.json", B.CRED_PATH):
        ca = tmp_path / name
        ca.write_bytes(b"\x30\x03\x02\x01\x00")
        p = deploy(vb.url, "--no-package", "--ca", ca)
        assert p.returncode == 0, p.stderr
        assert (vb.flash / "config.json").read_bytes() == config
        assert (vb.flash / B.CRED_PATH).read_bytes() == cred
        assert (vb.flash / "ca.der").read_bytes() == ca.read_bytes()
    assert (
        "config.json trusts the built-in roots; the CA goes to ca.der: provision with --ca ca.der" in p.stderr
    )
    assert "config.json present, credential present" in p.stderr


@pytest.mark.parametrize("api", ["1.3.4", "1.4.0", "1.6"])
def test_probe_reports_the_umqtt_generation_flash_and_heap(vboard, api, tmp_path):
    vb = vboard(env={"UMQTT_API": api}, heap="300k")
    settings = B.load_board("VIRTUAL")
    files = D.plan(settings, tmp_path, package=False)
    info = D.probe(B.Board(vb.url), settings, files)
    assert info["umqtt"] == api
    assert int(info["mpy"]) & 0xFF == 6 and info["ver"].count(".") == 2
    assert 0 < int(info["heap"]) <= 300 * 1024 and int(info["flash"]) > 0
    assert info["have"] == {} and info["config"] == "none" and info["cred"] == "none"


def test_check_mpy_rules():
    ok = {"ver": "1.24.1", "mpy": str(6 | (3 << 8) | (10 << 10))}
    assert D.check_mpy(ok, (6, 0)) == "v6"
    assert D.check_mpy(ok, None) == "source"
    with pytest.raises(B.ToolError, match="reads .mpy v5, our mpy-cross emits v6.*1.12-1.18"):
        D.check_mpy({"ver": "1.17.0", "mpy": "5"}, (6, 0))
    with pytest.raises(B.ToolError, match="does not say which .mpy"):
        D.check_mpy({"ver": "1.12.0", "mpy": "none"}, (6, 0))
    # native code: arch and sub-version must match too (xtensawin = 10, sub-version 3)
    assert D.check_mpy(ok, (6, 3 | (10 << 2))) == "v6"
    with pytest.raises(B.ToolError, match="native code for arch 11"):
        D.check_mpy(ok, (6, 3 | (11 << 2)))


def test_deploy_refuses_when_the_flash_is_too_full():
    info = {"ver": "1.24.1", "mpy": "6", "heap": "100000", "flash": "4096", "have": {}, "ls": []}

    class Probed:
        port = "fake://0"

        def exec(self, code):
            return "".join("P %s %s\n" % kv for kv in info.items() if kv[0] not in ("have", "ls"))

    settings = B.load_board("VIRTUAL")
    files = [(B.FIRMWARE / "main.py", "main.py"), (B.FIRMWARE / "boot.py", "boot.py")]
    with pytest.raises(B.ToolError, match="4 KB of flash free, the files need about"):
        D.deploy(Probed(), settings, files, package=False)
    assert os.path.exists(B.FIRMWARE / "main.py")


# A boot.py that cuts every write to main.py (or its temporary copy) at 1 KB with an I/O error, as a
# power cut or a pulled cable in the middle of `mpremote cp` does.
CUT_WRITES_BOOT = """
import builtins

_open = builtins.open


class _Cut:
    def __init__(self, f):
        self.f = f
        self.n = 0

    def write(self, b):
        if self.n + len(b) > 1024:
            self.f.write(b[: 1024 - self.n])
            self.n = 1024
            self.f.close()
            raise OSError(5)
        self.n += len(b)
        return self.f.write(b)

    def close(self):
        self.f.close()


def open(p, mode="r", *a):
    f = _open(p, mode, *a)
    return _Cut(f) if "w" in mode and p.lstrip("/").startswith("main.py") else f


builtins.open = open
"""


def test_a_copy_cut_short_never_leaves_a_truncated_main_py(vboard):
    # mpremote cp is not atomic: a copy cut short used to leave main.py truncated, and the board then
    # booted into a SyntaxError. Deploy writes main.py.tmp, checks its hash on the board, then renames.
    vb = vboard()
    (vb.flash / "boot.py").write_text(CUT_WRITES_BOOT)
    p = deploy(vb.url, "--no-package")
    assert p.returncode == 1
    assert len(p.stderr.strip().splitlines()[-1].split("\n")) == 1 and "deploy: error: copy to" in p.stderr
    assert not (vb.flash / "main.py").exists()  # never a main.py cut short under the name that runs
    (vb.flash / "boot.py").unlink()
    p = deploy(vb.url, "--no-package")
    assert p.returncode == 0, p.stderr
    assert (vb.flash / "main.py").read_bytes() == (B.FIRMWARE / "main.py").read_bytes()
    assert not [f for f in listing(vb.flash) if f.endswith(".tmp")]


def test_deploy_replaces_ours_cut_short_and_a_file_that_does_not_compile(vboard):
    ours = (B.FIRMWARE / "main.py").read_bytes()
    broken = b"# my app\nwhile True:\n    x = (1,\n"
    vb = vboard()
    (vb.flash / "main.py").write_bytes(ours[:1024])  # compiles or not, it is ours cut short
    (vb.flash / "boot.py").write_bytes(broken)  # no version of ours, and no program at all
    p = deploy(vb.url, "--no-package")
    assert p.returncode == 0, p.stderr
    assert (
        "deploy: the board's main.py is ours cut short (the first 1024 of the %d bytes of a version of "
        "ours), from a copy that was interrupted: replaced" % len(ours) in p.stderr
    )
    assert "deploy: the board's boot.py does not compile (" in p.stderr
    assert "replaced with ours; the old one is kept on the board as boot.py.broken" in p.stderr
    assert (vb.flash / "main.py").read_bytes() == ours
    assert (vb.flash / "boot.py").read_bytes() == (B.FIRMWARE / "boot.py").read_bytes()
    assert (vb.flash / "boot.py.broken").read_bytes() == broken
    assert "kept the board's own" not in p.stderr


def test_board_file_verdicts():
    ours = (B.FIRMWARE / "main.py").read_bytes()
    assert D.board_file_verdict("main.py", ours[:100])[0] == "cut"
    assert D.board_file_verdict("main.py", b"")[0] == "cut"
    assert D.board_file_verdict("main.py", USER_MAIN) == ("keep", None)
    verdict, why = D.board_file_verdict("main.py", b"def f(:\n")
    assert verdict == "broken" and "SyntaxError" in why


def test_deploy_sees_the_boards_own_free_flash_and_refuses_what_does_not_fit(vboard):
    # The virtual board used to report the host's disk (`234008 MB free`): the check never came into play.
    vb = vboard(env={"VBOARD_FS_BYTES": str(64 * 1024)})
    p = deploy(vb.url)
    assert p.returncode == 1
    assert "flash 56 KB free" in p.stderr
    assert (
        p.stderr.strip()
        .splitlines()[-1]
        .startswith("deploy: error: the board has 56 KB of flash free, the files need about")
    )
    assert listing(vb.flash) == []
    p = deploy(vboard().url, "--no-package")
    assert p.returncode == 0 and "flash 2040 KB free" in p.stderr


def test_deploy_onto_a_board_running_an_ota_bundle_makes_it_run_the_deployed_files(vboard):
    # The loader (boot.py) runs the bundle ota/state names instead of /main.py and /lib: a deploy that left
    # it would copy files the board never runs. Deployed twice: the second finds every file up to date and
    # still drops a state an update wrote since.
    vb = vboard()
    config = b'{"product_key": "a1PK", "product_secret": "x"}\n'
    (vb.flash / "config.json").write_bytes(config)
    (vb.flash / "ota" / "a").mkdir(parents=True)
    (vb.flash / "ota" / "a" / "main.py").write_text("print('bundle')\n")
    for _ in range(2):
        (vb.flash / "ota" / "state").write_text('{"cur": "a", "ver": "9.9"}')
        p = deploy(vb.url)
        assert p.returncode == 0, p.stderr
        assert "the board ran an OTA bundle: it now runs what was deployed (ota/state removed)" in p.stderr
        assert not (vb.flash / "ota" / "state").exists()
        assert (vb.flash / "main.py").read_bytes() == (B.FIRMWARE / "main.py").read_bytes()
    assert (vb.flash / "config.json").read_bytes() == config
    assert (vb.flash / "ota" / "a" / "main.py").exists()  # the bundles stay for the next update to replace
    p = deploy(vb.url)  # no state: nothing said
    assert p.returncode == 0 and "OTA bundle" not in p.stderr, p.stderr
