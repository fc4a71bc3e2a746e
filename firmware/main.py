# Runs after boot.py on every reset: bring the device online (registering on
# the first boot only), then a minimal application that posts a property
# periodically and survives dropped connections.
import time

from aliyun_iot import boot_flow
from aliyun_iot.errors import IotError

_POST_EVERY_MS = 60000


def app(s):
    t_post = time.ticks_ms()
    while True:
        try:
            s.check(1000)
            s.ping_if_idle()
            if time.ticks_diff(time.ticks_ms(), t_post) >= _POST_EVERY_MS:
                s.post_property({"uptime_s": time.ticks_ms() // 1000})
                t_post = time.ticks_ms()
        except IotError as e:
            if not e.retry:
                raise
            boot_flow.log("connection lost (%s): reconnecting" % e.code)
            s.reconnect()


def main():
    try:
        app(boot_flow.run())
    except Exception as e:  # every failure is reported the same way
        boot_flow.fail(e)
        if isinstance(e, IotError) and e.retry:
            # Out of attempts on something a retry can fix (the network): try the whole
            # boot again later. Jitter keeps a fleet that failed together from retrying together.
            from aliyun_iot.session import backoff_ms

            d = backoff_ms(6)
            boot_flow.log("rebooting in %d ms" % d)
            time.sleep_ms(d)
            import machine

            machine.reset()


main()
