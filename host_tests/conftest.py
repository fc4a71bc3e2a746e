"""Shared pytest setup: every host_tests/plugins/*.py is loaded as a plugin.

Each helper keeps its fixtures in its own plugin file (runtimes.py, emulator.py, vboard.py, ...).
host_tests/device/ holds scripts that run ON the runtimes (CPython and the MicroPython unix port),
so pytest must not collect them itself.
"""

from pathlib import Path

import pytest

# Plugins import one another (e.g. runtimes); rewrite their asserts whoever imports them first.
pytest.register_assert_rewrite("host_tests.plugins")

_PLUGIN_DIR = Path(__file__).parent / "plugins"

pytest_plugins = sorted(
    "host_tests.plugins." + p.stem for p in _PLUGIN_DIR.glob("*.py") if not p.stem.startswith("_")
)

collect_ignore = ["device"]


def pytest_terminal_summary(terminalreporter):
    """Print what tests measured (record_property("measure", text)); works under xdist too."""
    lines = []
    for rep in terminalreporter.stats.get("passed", []):
        for key, value in getattr(rep, "user_properties", ()):
            if key == "measure":
                lines.append(str(value))
    if lines:
        terminalreporter.section("measurements")
        for line in sorted(lines):
            terminalreporter.write_line(line)
