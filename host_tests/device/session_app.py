# The application's session after a first boot (argv[1]: the flash dir holds
# config.json): subscribe with a callback, messages arrive through check(),
# a second login with the same credential kicks this one off and check()
# reconnects by itself and subscribes again, an idle wait leaves the link
# whole, and backoff is capped.
import json
import time

import devkit

import aliyun_iot
from aliyun_iot import backoff_ms, config, store
from aliyun_iot.session import Session


def until(cond, ms=3000):
    t0 = time.ticks_ms()
    while not cond() and time.ticks_diff(time.ticks_ms(), t0) < ms:
        s.check(200)
    return cond()


s = aliyun_iot.connect()
cfg = config.load()
cred = store.load()
topic = "/%s/%s/user/echo" % (cred["pk"], cred["dn"])
got = []
s.subscribe(topic, lambda t, m: got.append((t, m)))
s.check(500)  # the SUBACK
s.publish(topic, json.dumps({"n": 1}))
until(lambda: got)
devkit.equal("callback-receives", got, [(topic.encode(), b'{"n": 1}')])

# Idle waits that time out (nothing arrives) must leave the TLS link whole.
for _ in range(3):
    s.check(300)
reply = s.post_property({"temperature": 21})
devkit.equal("post-after-idle-waits", (reply.get("code"), s.connects), (200, 1))

# The same credential logging in elsewhere kicks this session off; check() reconnects by itself.
cfg["ctx"] = s.cfg["ctx"]  # the TLS context the boot built
other = Session(cfg, cred)
while not other.online:
    other.check(500)
back = until(lambda: s.connects == 2, 8000) and s.online
devkit.check("kicked-off-then-back", back, "connects=%d" % s.connects)
other.close()
got.clear()
s.publish(topic, "again")
until(lambda: got)
devkit.equal("resubscribed-after-reconnect", got, [(topic.encode(), b"again")])
s.close()

ds = [backoff_ms(a, 1000, 8000) for a in range(8)]
devkit.check("backoff-capped", all(500 <= d <= 8000 for d in ds) and max(ds) > 2000, repr(ds))
