"""RAM next to a bare umqtt.simple TLS connection, measured in one run on the unix port (tools/ram.py):
the smallest -X heapsize of a normal boot, of a normal boot followed by a reconnection (the device's worst
case in the field: the session resident) and of a first boot, as multiples of the bare baseline's; the heap
the package still holds once online; and no first-boot code held after registration.

Two limits are the issue's goals: a first boot within 1.8x (measured: 1.72x, 1.74x in some runs) and a
normal boot within 1.5x (measured: 1.48x). The others are what the package reaches today, with a little
headroom, so that any regression fails here: a reconnection within 1.6x (measured: 1.54x) and 14 KB held
(measured: 13.5 KB; the goal, 8 KB, is not met: docs/ram.md says where the rest goes). Heaps are found in
steps of 128 bytes (tools.ram.STEP), and each limit is checked with the 3 KiB above it too: whether a heap is
enough is decided by fragmentation, not monotonic in its size.
"""

import pytest

from tools.devrun import micropython_exe
from tools.ram import STEP, RamProbe

NORMAL_X = 1.5  # normal boot: the goal (measured: 1.48x)
RECONNECT_X = 1.6  # a normal boot, then a reconnection (measured: 1.54x)
# First boot: the goal (measured: 1.72x; 1.74x in some runs). Past 300 qstrs the unix port allocates a
# fifth qstr pool (3.6 KB, about 0.16x), and this fails: the qstr budget stays visible.
FIRST_X = 1.8
HELD_OVER = 14 * 1024  # heap held once online, over the baseline's (measured: 13.5 KB; goal 8 KB)

pytestmark = pytest.mark.skipif(micropython_exe() is None, reason="needs the MicroPython unix port")


def test_ram_next_to_a_bare_umqtt_connection(tmp_path, record_property):
    p = RamProbe(tmp_path).start()
    try:
        base = p.smallest(p.baseline)
        assert base is not None, "the bare baseline does not come online"
        # Each limit is checked with the 3 KiB above it too: the edge is not monotonic (tools/ram.py).
        limits = []
        for what, run, x in (("normal boot", p.normal, NORMAL_X), ("reconnection", p.reconnect, RECONNECT_X),
                             ("first boot", p.first, FIRST_X)):
            heap = int(base * x) // STEP * STEP
            assert p.online_from(run, heap), "a %s needs more than %d bytes (%.2f x the baseline's %d)" % (
                what, heap, x, base)
            limits.append("%s %d B" % (what, heap))
        first_code = p.first(1 << 18)[2]
        assert first_code == [], "first-boot code still held once online: %s" % first_code
        base_held = p.baseline(1 << 18)[1]
        normal_held = p.normal(1 << 18)[1]
        over = normal_held - base_held
        assert over <= HELD_OVER, "the package holds %d bytes once online (limit %d)" % (over, HELD_OVER)
        record_property("measure", "ram: baseline %d B; online from the limit to 3 KiB above it: %s; held "
                        "once online %d B over the baseline's %d B" % (base, ", ".join(limits), over,
                                                                       base_held))
    finally:
        p.stop()


def test_ram_over_plain_mqtt(tmp_path):
    # python -m tools.ram --no-tls (for a build without TLS, tools/unix32.sh), run on the installed port:
    # every figure but the first boot's (registration is TLS only).
    from tools.ram import figures

    r = figures(tmp_path, tls=False)
    assert r["baseline_kib"] < r["normal_kib"] <= r["reconnect_kib"] + 4
    assert r["first_kib"] is None and r["first_boot_code_held"] is None
    assert 0 < r["held_over_baseline"] < r["normal_held"]
