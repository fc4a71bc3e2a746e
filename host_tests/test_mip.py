"""Installing with mip: package.json at the repository root (kept in step with firmware/aliyun_iot), the
manifest's and package.json's version against __version__, the github: URLs mpremote derives from it, and
`mpremote mip install <repo>/package.json` onto a fresh virtual board that then comes online."""

import io
import json
import shutil
import time
import urllib.request

import pytest

from host_tests.plugins.firmware import board_flash
from tools import board as B
from tools import mip_package as M
from tools.vboard import boot

PK, PS = "a1MipInstal", "MipProductSecret0001"
MAC = "24:0a:c4:00:0d:01"
DN = "esp32-240ac4000d01"  # the firmware's default DeviceName for MAC
WIFI = "lab:lab-password"  # what board_flash's config.json joins


def _urls(pj):
    return json.loads(pj.read_text())["urls"]


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_package_json_lists_exactly_the_package_files():
    pj = json.loads(M.PACKAGE_JSON.read_text())
    files = sorted(
        "aliyun_iot/" + p.name
        for p in (B.FIRMWARE / "aliyun_iot").iterdir()
        if p.is_file() and p.suffix not in (".pyc", ".mpy")
    )
    assert sorted(t for t, _ in pj["urls"]) == files
    for target, url in pj["urls"]:
        assert ":" not in url and not url.startswith("/"), url  # relative: github: and local both work
        assert (M.REPO / url).read_bytes() == (B.FIRMWARE / target).read_bytes()
    assert pj["deps"] == []  # umqtt.simple and ntptime are frozen on stock ESP32 firmware
    assert M.problems() == []


def test_version_has_one_source():
    init = (B.FIRMWARE / "aliyun_iot" / "__init__.py").read_text()
    ver = M.version()
    assert '__version__ = "%s"' % ver in init
    assert json.loads(M.PACKAGE_JSON.read_text())["version"] == ver
    assert M.manifest_version() == ver


def _copy_repo(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(B.FIRMWARE, root / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(M.PACKAGE_JSON, root / "package.json")
    return root, root / "firmware"


def test_a_module_added_or_removed_without_package_json_is_caught(tmp_path):
    root, fw = _copy_repo(tmp_path)
    manifest = fw / "manifest.py"
    assert M.problems(fw, root, manifest) == []
    (fw / "aliyun_iot" / "newmod.py").write_text("x = 1\n")
    (fw / "aliyun_iot" / "https.py").unlink()
    assert M.problems(fw, root, manifest) == [
        "aliyun_iot/newmod.py: not in package.json",
        "aliyun_iot/https.py: in package.json, not in the package",
    ]
    (root / "package.json").write_text(M.source_package_json(fw, root))  # what --write does
    assert M.problems(fw, root, manifest) == []


def test_a_version_bump_in_one_place_only_is_caught(tmp_path):
    root, fw = _copy_repo(tmp_path)
    init = fw / "aliyun_iot" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "%s"' % M.version(), '__version__ = "9.8.7"'))
    got = M.problems(fw, root, fw / "manifest.py")
    assert len(got) == 2 and all("'9.8.7'" in g for g in got), got
    assert got[0].startswith("package.json version") and got[1].startswith(str(fw / "manifest.py"))


class _RecordingTransport:
    """The part of mpremote's transport that mip uses, over a dict (the board's filesystem)."""

    def __init__(self):
        self.files = {}

    def fs_exists(self, path):
        return path in self.files or any(f.startswith(path + "/") for f in self.files)

    def fs_mkdir(self, path):
        pass

    def fs_writefile(self, path, data, progress_callback=None):
        self.files[path] = bytes(data)

    def fs_hashfile(self, path, algo):
        raise FileNotFoundError(path)


def test_github_install_fetches_the_relative_urls_from_the_repository(monkeypatch):
    """`mpremote mip install github:owner/repo@v1`: what the pinned mpremote requests, served from here."""
    from mpremote import mip as mpmip

    prefix = "https://raw.githubusercontent.com/owner/repo/v1/"
    requested = []

    def urlopen(url, *a, **kw):
        requested.append(url)
        assert url.startswith(prefix), url  # nothing from micropython.org's index: no deps
        return io.BytesIO((M.REPO / url[len(prefix) :]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    t = _RecordingTransport()
    mpmip._install_package(t, "github:owner/repo", "https://micropython.org/pi/v2", "/lib", "v1", True)
    pj = json.loads(M.PACKAGE_JSON.read_text())
    assert requested == [prefix + "package.json"] + [prefix + url for _, url in pj["urls"]]
    assert t.files == {"/lib/" + t_: (M.REPO / u).read_bytes() for t_, u in pj["urls"]}


@pytest.mark.parametrize("spelling", ["./package.json", "package.json", str(M.PACKAGE_JSON)])
def test_local_install_copies_the_files_beside_package_json_without_network(spelling, monkeypatch):
    """`mpremote mip install ./package.json`: the pinned mpremote reads every file on the host."""
    from mpremote import mip as mpmip

    def urlopen(url, *a, **kw):
        raise AssertionError("network access for %s" % url)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.chdir(M.REPO)
    t = _RecordingTransport()
    mpmip._install_package(t, spelling, "https://micropython.org/pi/v2", "/lib", None, True)
    assert t.files == {"/lib/" + t_: (M.REPO / u).read_bytes() for t_, u in _urls(M.PACKAGE_JSON)}


def test_mpy_package_is_bytecode_for_every_arch(tmp_path):
    pj = M.build_mpy(tmp_path / "mip")
    urls = json.loads(pj.read_text())["urls"]
    assert [t for t, _ in urls] == [f[: -len(".py")] + ".mpy" for f in M.package_files()]
    for target, url in urls:
        head = (tmp_path / "mip" / url).read_bytes()[:4]
        assert head[:2] == b"M\x06" and head[2] == 0, (target, head)  # mpy v6, no native code: any arch


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["source", "mpy"])
def test_mip_install_on_a_fresh_virtual_board_then_online(
    variant, vboard, emulator, tmp_path, secret_guard, record_property
):
    emu = emulator(products={PK: PS}, devices=["%s/%s" % (PK, DN)])
    secret_guard.secret(PS)
    pj = M.PACKAGE_JSON if variant == "source" else M.build_mpy(tmp_path / "mip")
    want = {t: (pj.parent / u).read_bytes() for t, u in _urls(pj)}
    vb = vboard(mac=MAC, wifi=WIFI)

    t0 = time.monotonic()
    r = vb.mpremote("mip", "install", str(pj), timeout=180)
    took = time.monotonic() - t0
    secret_guard.output(r.stdout, r.stderr)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("Done"), r.stdout + r.stderr
    assert _tree(vb.flash / "lib") == want  # the package and nothing else: no second umqtt in /lib
    record_property(
        "measure",
        "mip install (%s) onto a virtual board: %d files, %d bytes, %.1f s"
        % (variant, len(want), sum(map(len, want.values())), took),
    )

    # The user's part: a config.json, the CA it names, and the example main.py.
    staging = tmp_path / "staging"
    staging.mkdir()
    board_flash(emu, staging, product_key=PK, product_secret=PS)
    r = vb.mpremote(
        "cp", staging / "config.json", ":config.json", "+",
        "cp", staging / "emulator_ca.der", ":emulator_ca.der", "+",
        "cp", B.FIRMWARE / "main.py", ":main.py",
    )  # fmt: skip
    secret_guard.output(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    vb.stop()  # one interpreter on a flash at a time: power the board on by itself

    res = boot(vb.flash, until="online", timeout=60, mac=MAC, wifi=WIFI)
    issued = (emu.device(PK, DN) or {}).get("secret")
    secret_guard.secret(issued)
    secret_guard.output(emu.log(), *(text for _, text in res.lines))
    assert res.ok, res.reason
    names = [s.name for s in res.states]
    assert names.index("registering") < names.index("registered") < names.index("online")
    assert issued and (vb.flash / B.CRED_PATH).is_file()
