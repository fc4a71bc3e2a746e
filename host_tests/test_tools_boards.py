"""boards/*/manifest.py (frozen-module manifests for self-built firmware), deploy's compile step, and the
Makefile fragment tools/tools.mk."""

import os
import shutil
import subprocess
import sys

import pytest

from tools import board as B
from tools import deploy

MANIFEST_BOARDS = ("ESP32_GENERIC", "ESP32_GENERIC_S3", "ESP32_GENERIC_C3")


class ManifestRun:
    """Executes a manifest the way MicroPython's tools/manifestfile.py does: relative paths resolve against
    the manifest's own folder; $(PORT_DIR)/$(MPY_DIR) are the firmware tree's and are only recorded."""

    def __init__(self):
        self.port_includes = []
        self.packages = []
        self.metadata = {}

    def run(self, path):
        here = os.path.dirname(os.path.abspath(path))

        def resolve(p):
            return p if p.startswith("$(") else os.path.normpath(os.path.join(here, p))

        def include(p, **kw):
            p = resolve(p)
            if p.startswith("$("):
                self.port_includes.append(p)
                return
            if os.path.isdir(p):
                p = os.path.join(p, "manifest.py")
            assert os.path.isfile(p), "include of a missing manifest: %s" % p
            self.run(p)

        def package(name, files=None, base_path=".", opt=None):
            root = os.path.join(resolve(base_path), name)
            assert os.path.isfile(os.path.join(root, "__init__.py")), "package folder missing: %s" % root
            self.packages.append(root)

        def module(name, base_path=".", opt=None):
            assert os.path.isfile(os.path.join(resolve(base_path), name)), name

        def metadata(**kw):
            self.metadata.update(kw)

        def require(name, **kw):
            self.port_includes.append("require:" + name)

        g = {
            "include": include,
            "package": package,
            "module": module,
            "metadata": metadata,
            "require": require,
        }
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), g)


@pytest.mark.parametrize("name", MANIFEST_BOARDS)
def test_board_manifest_includes_the_port_and_freezes_the_package(name):
    m = ManifestRun()
    m.run(B.BOARDS / name / "manifest.py")
    assert m.port_includes == ["$(PORT_DIR)/boards/manifest.py"]
    assert m.packages == [str(B.FIRMWARE / "aliyun_iot")]
    init = (B.FIRMWARE / "aliyun_iot" / "__init__.py").read_text()
    assert '__version__ = "%s"' % m.metadata["version"] in init  # one version for the board and the package


def test_deploy_compiles_outside_the_tree_for_the_boards_arch(tmp_path):
    def listing():  # __pycache__ comes and goes with parallel tests importing the package on CPython
        return sorted(p.name for p in (B.FIRMWARE / "aliyun_iot").iterdir() if p.name != "__pycache__")

    before = listing()
    files = deploy.plan(B.load_board("VIRTUAL"), tmp_path, ca=None)
    remote = [r for _, r in files]
    sources = sorted(p.stem for p in (B.FIRMWARE / "aliyun_iot").glob("*.py"))
    assert sorted(r.split("/")[-1][: -len(".mpy")] for r in remote if r.endswith(".mpy")) == sources
    assert all(r.startswith("lib/aliyun_iot/") for r in remote if r.endswith(".mpy"))
    assert remote[-2:] == ["boot.py", "main.py"]
    assert all(str(local).startswith(str(tmp_path)) for local, r in files if r.endswith(".mpy"))
    assert listing() == before  # nothing built in the tree
    with pytest.raises(B.ToolError, match="CA file"):
        deploy.plan(B.load_board("VIRTUAL"), tmp_path, ca=tmp_path / "none.der")


def test_virtual_boards_mpy_files_import_on_the_unix_port(tmp_path):
    mp = shutil.which("micropython", path=os.path.dirname(sys.executable))
    if mp is None:
        pytest.skip("the MicroPython unix port is not installed in the venv")
    lib = tmp_path / "lib"
    (lib / "aliyun_iot").mkdir(parents=True)
    for local, remote in deploy.plan(B.load_board("VIRTUAL"), tmp_path / "build"):
        if remote.startswith("lib/"):
            shutil.copy(local, tmp_path / remote)
    code = (
        "import sys\nsys.path[:] = ['lib']\nfrom aliyun_iot import config\n"
        "print(config.__file__, config.validate({'product_key': 'a1PK', 'product_secret': 'x'})['mode'])"
    )
    p = subprocess.run([mp, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert p.stdout.split() == ["lib/aliyun_iot/config.mpy", "register"], p.stderr


def test_source_deploy_copies_the_py_files(tmp_path):
    files = deploy.plan(B.load_board("ESP32_GENERIC_C3"), tmp_path, source=True, package=True)
    assert all(str(local).startswith(str(B.FIRMWARE)) for local, _ in files)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_fragment_calls_the_tools(tmp_path):
    mk = tmp_path / "Makefile"
    mk.write_text("include %s\n" % (B.REPO / "tools" / "tools.mk"))

    def dry(*args):
        p = subprocess.run(
            ["make", "-s", "-n", "-f", str(mk), *args], cwd=B.REPO, capture_output=True, text=True
        )
        assert p.returncode == 0, p.stderr
        return [t.strip('"') for t in p.stdout.split()]  # the shell's quotes are not part of the argument

    got = dry("flash", "FIRMWARE=fw.bin")
    assert got[1:4] == ["-m", "tools.flash", "--board"] and "ESP32_GENERIC" in got and "fw.bin" in got
    got = dry("deploy", "BOARD=VIRTUAL", "PORT=socket://127.0.0.1:9", "CA=ca.der")
    assert got[2:] == [
        "tools.deploy",
        "--board",
        "VIRTUAL",
        "--port",
        "socket://127.0.0.1:9",
        "--ca",
        "ca.der",
    ]
    for target, module in (
        ("provision", "tools.provision"),
        ("backup", "tools.cred"),
        ("restore", "tools.cred"),
        ("status", "tools.cred"),
    ):
        got = dry(target, "PORT=/dev/ttyUSB1", "ARGS=--dry-run", "FILE=b.cred")
        assert got[2] == module and "/dev/ttyUSB1" in got, got


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_fragment_stops_on_an_empty_variable_in_one_line(tmp_path):
    mk = tmp_path / "Makefile"
    mk.write_text("include %s\n" % (B.REPO / "tools" / "tools.mk"))

    def make(*args):
        return subprocess.run(
            ["make", "-s", "-n", "-f", str(mk), *args], cwd=B.REPO, capture_output=True, text=True
        )

    for target, var in (
        ("provision", "PORT"),
        ("deploy", "PORT"),
        ("backup", "BOARD"),
        ("status", "PORT"),
        ("restore", "FILE"),
        ("line", "CONFIG"),
    ):
        given = {"FILE": "x.cred", "PORTS": "/dev/ttyUSB0", "CONFIG": "c.json", var: ""}
        p = make(target, *["%s=%s" % kv for kv in given.items()])
        assert p.returncode != 0 and p.stdout == "", (target, p.stdout)
        (line,) = p.stderr.strip().splitlines()
        assert "%s is empty: give %s=" % (var, var) in line, line
    got = make("line", "PORTS=/dev/ttyUSB0 /dev/ttyUSB1", "CONFIG=c.json", "NAMES=n.csv").stdout.split()
    assert got[1:3] == ["-m", "tools.line"] and got[got.index("--ports") + 1 : got.index("--ports") + 3] == [
        "/dev/ttyUSB0",
        "/dev/ttyUSB1",
    ]
    assert "--names" in got and "--firmware" not in got
    assert make("line-bench").stdout.split()[1:] == ["-m", "tools.line", "--bench", "8"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_fragment_stops_before_echoing_a_secret_in_args(tmp_path):
    # make echoes every command it runs: `make provision ARGS="--product-secret X"` printed X before the
    # tool refused it.
    mk = tmp_path / "Makefile"
    mk.write_text("include %s\n" % (B.REPO / "tools" / "tools.mk"))
    for target in ("flash", "provision", "line", "deploy"):
        for args in (
            "--product-secret S3cretTyped",
            "--product-secret=S3cretTyped",
            "--wifi-password S3cretTyped",
        ):
            p = subprocess.run(
                ["make", "-f", str(mk), target, "PORT=x", "PORTS=x", "CONFIG=c", "ARGS=" + args],
                cwd=B.REPO, capture_output=True, text=True,
            )  # fmt: skip
            assert p.returncode != 0 and "S3cretTyped" not in p.stdout + p.stderr, (target, args)
            assert "ARGS holds a secret option" in p.stderr and "--product-secret-file FILE" in p.stderr
    argv = ["make", "-s", "-n", "-f", str(mk), "provision", "PORT=x", "ARGS=--product-secret-file f"]
    p = subprocess.run(argv, cwd=B.REPO, capture_output=True, text=True)
    assert p.returncode == 0 and "--product-secret-file f" in p.stdout
