"""Power cuts during a credential write on littlefs (MicroPython unix port; CPython skips).

The sweep runs in host_tests/device/powercut.py: for every program/erase operation of a
store.save(), power is lost there (op not done, or half done), the flash is remounted from what
survived, and store.load() must give the old state or the whole new credential.
"""

import re

from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script

_CUTS = re.compile(r"^CUTS (\w+) (\w+) checked=(\d+) ops=(\d+)$", re.M)
SCENARIOS = {"overwrite", "first", "compaction"}


def test_powercut_sweep(runtime, flash, record_property):
    res = run_script(runtime, device_script("powercut.py"), cwd=flash, timeout=120)
    oks = set(assert_device_ok(res))  # skips on CPython (no vfs.VfsLfs2) with the reason
    sweeps = {(m[0], m[1]): (int(m[2]), int(m[3])) for m in _CUTS.findall(res.stdout)}
    assert {s for s, _ in sweeps} == SCENARIOS, res.stdout
    for (scenario, mode), (checked, ops) in sweeps.items():
        assert ops > 0, "%s: a clean save made no flash writes" % scenario
        assert checked == ops, "%s %s: %d of %d cut points checked" % (scenario, mode, checked, ops)
        assert "%s %s" % (scenario, mode) in oks
    total = sum(checked for checked, _ in sweeps.values())
    detail = ", ".join("%s/%s=%d" % (s, m, c) for (s, m), (c, _) in sorted(sweeps.items()))
    record_property("measure", "power-cut points checked: %d (%s)" % (total, detail))
