# Session.on_up (cwd: a flash with config.json and a stored credential): called as on_up(session) after
# every connection once its subscriptions are sent; an exception in it is reported (on_error) and the
# session carries on.
import time

import devkit

import aliyun_iot

calls = []
errors = []


def up(s):
    calls.append((s.connects, s.online))
    if len(calls) == 1:
        raise ValueError("hook bug")


s = aliyun_iot.connect()
s.on_error = errors.append
s.on_up = up
s.close()  # the link drops: the session reconnects by itself and calls on_up
t0 = time.ticks_ms()
while len(calls) < 1 and time.ticks_diff(time.ticks_ms(), t0) < 15000:
    s.check(200)
devkit.equal("called-after-reconnect", calls, [(2, True)])
devkit.check("error-reported", len(errors) == 1 and isinstance(errors[0], ValueError), repr(errors))
devkit.equal("session-carries-on", (s.post_property({"n": 1}).get("code"), s.online), (200, True))
s.close()
t0 = time.ticks_ms()
while len(calls) < 2 and time.ticks_diff(time.ticks_ms(), t0) < 15000:
    s.check(200)
devkit.equal("called-after-every-connection", calls, [(2, True), (3, True)])
s.close()
