# Bounded state over a long life (argv-less; the flash dir holds config.json):
# replies to posts nobody waits for are not kept, and uptime comes from a
# counter that survives the ticks wrap (every 12.4 days on an ESP32).
import gc
import time

import devkit

import aliyun_iot

s = aliyun_iot.connect()


def heap():
    gc.collect()
    if hasattr(gc, "mem_alloc"):
        return gc.mem_alloc()  # bytes on MicroPython
    import sys

    return sys.getallocatedblocks() * 16  # CPython: blocks, roughly as bytes


for i in range(20):  # warm up every path once
    s.post_property({"n": i}, wait=False)
    s.check(20)
before = heap()
for i in range(300):
    s.post_property({"n": i}, wait=False)
    s.check(0)
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 1500:  # let every reply arrive and be handled
    s.check(100)
grown = heap() - before
devkit.check("unawaited-replies-not-kept", grown < 1024, "heap grew %d bytes over 300 posts" % grown)
devkit.equal("post-after-300", s.post_property({"n": "last"})["code"], 200)
devkit.equal("no-reconnect", s.connects, 1)

# The session last counted 5 s ago, on the other side of the wrap: uptime still grows by 5 s.
up = s.uptime_s()
s.t = time.ticks_add(time.ticks_ms(), -5000)
devkit.check("uptime-across-the-wrap", 4 <= s.uptime_s() - up <= 6, "%d -> %d" % (up, s.uptime_s()))
s.close()
