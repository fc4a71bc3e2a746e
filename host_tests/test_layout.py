"""The repository stands on its own: host tools never import the tests, tests never import other test
modules, the protocol reference is in the repository, device scripts are not named like tests, and the
firmware reaches the tests' sys.path one way only (pyproject's pytest pythonpath)."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SKIP = {".git", ".venv", ".venv-sdk", "build", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _files(root, pattern):
    return [p for p in sorted(root.rglob(pattern)) if not _SKIP.intersection(p.relative_to(REPO).parts)]


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_host_tools_never_import_the_tests():
    bad = ["%s: %s" % (p.relative_to(REPO), m) for p in _files(REPO / "tools", "*.py") for m in _imports(p)
           if m == "host_tests" or m.startswith(("host_tests.", "pytest", "_pytest"))]  # fmt: skip
    assert not bad, bad


def test_tests_import_shared_helpers_from_plugins_never_from_a_test_module():
    bad = ["%s: %s" % (p.name, m) for p in _files(REPO / "host_tests", "*.py") for m in _imports(p)
           if re.match(r"host_tests\.test_", m)]  # fmt: skip
    assert not bad, bad


def test_protocol_reference_is_in_the_repository():
    assert (REPO / "docs" / "protocol.md").is_file()
    bad = []
    outside = re.compile(r"PROTOCOL\.md|\.\./shared/|/work/shared")  # the notes this repository grew from
    for p in _files(REPO, "*"):
        if p.is_file() and p.suffix in (".py", ".md", ".toml", ".txt", ".mk", "") and p != Path(__file__):
            if outside.search(p.read_text(errors="replace")):
                bad.append(str(p.relative_to(REPO)))
    assert not bad, "points outside the repository for the protocol: %s" % bad


def test_device_scripts_are_not_named_like_tests():
    named = [p.name for p in (REPO / "host_tests" / "device").glob("*.py") if p.name.startswith("test_")]
    assert not named


def test_the_firmware_reaches_sys_path_one_way():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^pythonpath = \["firmware"\]$', pyproject, re.M)
    bad = [str(p.relative_to(REPO)) for p in _files(REPO / "host_tests", "*.py")
           if re.search(r"sys\.path\.(insert|append)", p.read_text())]  # fmt: skip
    assert not bad, bad
