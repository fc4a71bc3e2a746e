# The example application: bring the device online (registering on the first
# boot only), post a property every minute, and apply properties the cloud
# sets. The session reconnects by itself; whatever else goes wrong ends in a
# report and a reset, never a parked device.
import os
import time

from micropython import const

if os.getcwd().startswith("/ota/"):  # boot.py ran this file from an update's bundle; the board's files: at /
    os.chdir("/")

import aliyun_iot
from aliyun_iot import IotError, otahook

_POST_EVERY_MS = const(60000)


def on_set(params):
    # Apply what the console set here; the return value is the reply's code (200: done).
    print("app: property set %s" % ",".join(sorted(params)))
    return 200


def app(s):
    s.on_property_set(on_set)
    t_post = time.ticks_ms()
    while True:
        s.check(1000)  # at least once a second: it also feeds the watchdog
        if time.ticks_diff(time.ticks_ms(), t_post) >= _POST_EVERY_MS:
            t_post = time.ticks_ms()
            try:
                s.post_property({"uptime_s": s.uptime_s()})
            except IotError as e:  # a refused or unanswered post: the session carries on
                print("app: post failed (%s)" % e.code)


def main():
    s = aliyun_iot.connect()
    otahook.start(s)  # updates over the air (docs/ota.md); leave out to go without
    app(s)


try:
    main()
except Exception as e:
    aliyun_iot.recover(e)
