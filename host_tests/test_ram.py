"""RAM next to a bare umqtt.simple TLS connection, measured in one run on the unix port (tools/ram.py):
the smallest -X heapsize of a normal boot, of a normal boot followed by a reconnection (the device's worst
case in the field: the session resident) and of a first boot, as multiples of the bare baseline's; the heap
the package still holds once online; and no first-boot code held after registration.

The limits are what the package reaches today, with a little headroom, so that any regression fails here.
The goals: a first boot within 1.8x (met: 1.74x, and tested at that limit), a normal boot within 1.5x and
8 KB held (not met: 1.52x, 13.5 KB); README "RAM" says where the rest goes. Each limit is checked with the
3 KiB above it too: whether a heap is enough is decided by fragmentation, not monotonic in its size.
"""

import pytest

from tools.devrun import micropython_exe
from tools.ram import RamProbe

NORMAL_X = 1.6  # normal boot: smallest heap <= 1.6 x the baseline's (measured: 1.52x; goal 1.5x)
RECONNECT_X = 1.65  # a normal boot, then a reconnection (measured: 1.57x)
# First boot: the issue's own limit (measured: 1.74x). Past 300 qstrs the unix port allocates a fifth qstr
# pool (3.6 KB, about 0.16x), and this fails: the qstr budget stays visible.
FIRST_X = 1.8
HELD_OVER = 15 * 1024  # heap held once online, over the baseline's (measured: 13.5 KB; goal 8 KB)

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
            kib = int(base * x)
            assert p.online_from(run, kib), "a %s needs more than %d KiB (%.2f x the baseline's %d KiB)" % (
                what, kib, x, base)
            limits.append("%s %d KiB" % (what, kib))
        first_code = p.first(256)[2]
        assert first_code == [], "first-boot code still held once online: %s" % first_code
        base_held = p.baseline(256)[1]
        normal_held = p.normal(256)[1]
        over = normal_held - base_held
        assert over <= HELD_OVER, "the package holds %d bytes once online (limit %d)" % (over, HELD_OVER)
        record_property("measure", "ram: baseline %d KiB; online from the limit to 3 KiB above it: %s; held "
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
