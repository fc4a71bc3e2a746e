"""The documentation against the repository: the README is short and links every page of docs/, every
relative link resolves, every `make` target and `python -m tools...` command shown exists (with the options
shown), and the counts, sizes and firmware version stated are the repository's own.

Generic on purpose: a page or a command added later is checked the same way without editing this file."""

import json
import re
import shlex
import subprocess
import sys
from functools import cache

import pytest

from host_tests.plugins.runtimes import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "boards" / "README.md", *sorted(REPO.glob("tools/*/README.md"))]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _name(p):
    return str(p.relative_to(REPO))


def code_lines(text):
    """Every line of code a page shows: fenced blocks, indented blocks and inline code spans, with
    backslash continuations joined."""
    chunks = _FENCE.findall(text)
    prose = _FENCE.sub("", text)
    chunks.append("\n".join(ln for ln in prose.splitlines() if ln.startswith("    ")))
    chunks += [m.replace("\n", " ") for m in re.findall(r"`([^`]+)`", prose)]
    lines = []
    for chunk in chunks:
        lines += chunk.replace("\\\n", " ").replace("\\|", "|").splitlines()
    return [re.sub(r"(^|\s)#.*", "", ln) for ln in lines]  # shell comments are prose


def _words(cmd):
    try:
        return shlex.split(cmd, comments=True)
    except ValueError:  # an unbalanced quote in a placeholder: plain split
        return cmd.split()


def shown_commands():
    """(page, kind, words): every `make ...` and `python -m tools.X ...` the pages show."""
    out = set()
    for page in PAGES:
        for line in code_lines(page.read_text()):
            for m in re.finditer(r"(?:^|[\s;&|(])make\s+(.*)", line):
                out.add((_name(page), "make", tuple(_words(m.group(1)))))
            for m in re.finditer(r"(?:^|[\s/])python[\d.]*\s+-m\s+(tools(?:\.\w+)+)(.*)", line):
                out.add((_name(page), "tool", (m.group(1), *_words(m.group(2)))))
    return sorted(out)


COMMANDS = shown_commands()


def test_readme_is_the_door():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    linked = {m for m in _LINK.findall(text)}
    missing = [_name(p) for p in DOCS if "docs/" + p.name not in linked]
    assert not missing, "pages of docs/ the README does not link: %s" % missing


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    bad = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            bad.append(target)
    assert not bad, "%s links to missing files: %s" % (_name(page), bad)


def test_the_pages_show_commands():
    kinds = {k for _, k, _ in COMMANDS}
    assert kinds == {"make", "tool"} and len(COMMANDS) > 30


def _make_targets_and_vars(words):
    targets, assigns = [], []
    for w in words:
        w = w.strip("[](),;.")
        if w == "make":
            break  # the next command on the same line
        if re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", w, re.S):
            assigns.append(w)
        elif re.fullmatch(r"[a-z][\w.-]*", w):
            targets.append(w)
        elif w.startswith("-") or not w:
            continue
        else:
            break  # a placeholder (<target>) or prose: the rest is not a command line
    return targets, assigns


@pytest.mark.parametrize("words", sorted({w for _, k, w in COMMANDS if k == "make"}), ids=" ".join)
def test_make_targets_exist(words):
    targets, assigns = _make_targets_and_vars(words)
    if not targets:
        pytest.skip("no target of ours (e.g. MicroPython's own make)")
    r = subprocess.run(["make", "-n", "--no-print-directory", *targets, *assigns], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    # A board target shown without its variables stops with its one line (tested below): it exists.
    ok = r.returncode == 0 or re.search(r"\*\*\* \w+ is empty: give ", r.stderr)
    assert ok and "No rule to make target" not in r.stderr, "make %s: %s" % (" ".join(words), r.stderr)


@cache
def _help(module, path):
    r = subprocess.run([sys.executable, "-m", module, *path, "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def _choices(help_text):
    m = re.search(r"\{([\w,-]+)\}", help_text)
    return set(m.group(1).split(",")) if m else set()


@pytest.mark.parametrize("words", sorted({w for _, k, w in COMMANDS if k == "tool"}), ids=" ".join)
def test_tool_commands_exist(words):
    module, args = words[0], words[1:]
    rc, text = _help(module, ())
    assert rc == 0 and "usage" in text, "python -m %s --help failed: %s" % (module, text[-300:])
    texts, path = [text], ()
    for w in args:
        for part in w.strip("[]").split("|"):
            if part in _choices(_help(module, path)[1]):
                path += (part,)
                rc, sub = _help(module, path)
                assert rc == 0, "python -m %s %s --help failed" % (module, " ".join(path))
                texts.append(sub)
    helps = "\n".join(texts)
    for w in args:
        for part in re.findall(r"(?<![\w-])--[a-z][\w-]*", w):
            assert re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(part), helps), (
                "python -m %s: option %s is shown in the docs but not in --help" % (module, part))


# ---- facts: generated or checked here, never typed from memory


def _docs_text():
    return {_name(p): p.read_text() for p in PAGES}


def _package():
    pj = json.loads((REPO / "package.json").read_text())
    files = [REPO / src for _, src in pj["urls"]]
    return len(files), sum(f.stat().st_size for f in files)


def test_mip_file_count_and_size(tmp_path):
    from tools import mip_package

    n, size = _package()
    mpy = tmp_path / "mip"
    mip_package.build_mpy(mpy)
    mpy_size = sum(f.stat().st_size for f in (mpy / "aliyun_iot").glob("*.mpy"))
    modules = len(list((mpy / "aliyun_iot").glob("*.mpy")))
    seen = 0
    for page, text in _docs_text().items():
        for count, kb in re.findall(r"(\d+) files,\s+about\s+(\d+)\s+KB\s+of\s+source", text):
            seen += 1
            want = (n, round(size / 1000))
            assert (int(count), int(kb)) == want, "%s: package.json has %d files, %d bytes" % (page, n, size)
        for kb in re.findall(r"precompiled\s+by\s+mpy-cross\s+\(about\s+(\d+)\s+KB\)", text):
            seen += 1
            assert int(kb) == round(mpy_size / 1000), "%s: the .mpy package is %d bytes" % (page, mpy_size)
        for count, kb in re.findall(r"whole\s+package\s+\((\d+)\s+modules\)\s+\|\s+([\d.]+)\s+KB", text):
            seen += 1
            assert (int(count), float(kb)) == (modules, round(mpy_size / 1000, 1)), (
                "%s: %d modules, %d bytes of .mpy" % (page, modules, mpy_size))
    assert seen >= 3


def _firmware_version():
    reqs = (REPO / "requirements-dev.txt").read_text()
    m = re.search(r"^micropython-esp32-stubs==(\d+\.\d+\.\d+)", reqs, re.M)
    return m.group(1)


def test_one_firmware_version_everywhere():
    """The MicroPython firmware the docs and tools name is the one the build checks import against."""
    want = _firmware_version()
    tools = [*REPO.glob("tools/*.py"), REPO / "tools" / "tools.mk"]
    sources = {**_docs_text(), **{_name(p): p.read_text() for p in tools}}
    found = {}
    for name, text in sources.items():
        for v in re.findall(r"-v(\d+\.\d+\.\d+)\.bin|MicroPython\s+v(\d+\.\d+\.\d+)", text):
            found.setdefault(v[0] or v[1], set()).add(name)
    assert found and set(found) == {want}, "firmware versions named: %s; the stubs are %s" % (found, want)


def test_board_targets_stop_with_one_line_on_an_empty_variable():
    """What docs/tools.md says of tools/tools.mk: each variable a target needs, given empty, stops it."""
    mk = (REPO / "tools" / "tools.mk").read_text()
    checked = 0
    for target, body in re.findall(r"^([a-z][\w-]*):\n((?:\t.*\n?)+)", mk, re.M):
        for var in re.findall(r"\$\(call need,(\w+),", body):
            given = ["FILE=x", "PORTS=x", "CONFIG=x", "FIRMWARE=x", "%s=" % var]
            r = subprocess.run(["make", "-n", "--no-print-directory", target, *given], cwd=REPO,
                               capture_output=True, text=True, timeout=30)
            assert r.returncode != 0 and r.stdout == "", (target, var, r.stdout)
            assert r.stderr.strip().count("\n") == 0 and "%s is empty: give %s=" % (var, var) in r.stderr
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("page", [p for p in PAGES if "```python" in p.read_text()], ids=_name)
def test_python_examples_compile_for_the_board(page, tmp_path):
    """Every ```python block of the docs is valid MicroPython (mpy-cross compiles it)."""
    from tools.mip_package import _mpy_cross

    for i, block in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)):
        src = tmp_path / ("example%d.py" % i)
        src.write_text(block)
        argv = [*_mpy_cross(), "-o", str(tmp_path / "x.mpy"), str(src)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, "%s, example %d: %s" % (_name(page), i + 1, r.stderr)
