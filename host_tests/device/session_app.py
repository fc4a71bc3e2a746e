# The application's session after a first boot (argv[1]: the flash dir holds
# config.json): subscribe with a callback, messages arrive through check(),
# ping, a second login with the same credential kicks this one off, and
# reconnect() brings it back with capped backoff.
import json
import time

import devkit

from aliyun_iot import boot_flow, config, store
from aliyun_iot.errors import IotError
from aliyun_iot.session import Session, backoff_ms

s = boot_flow.run()
cfg = config.load()
cred = store.load()
topic = "/%s/%s/user/echo" % (cred["pk"], cred["dn"])
got = []
s.subscribe(topic, lambda t, m: got.append((t, m)))
s.check(500)  # the SUBACK
s.publish(topic, json.dumps({"n": 1}))
t0 = time.ticks_ms()
while not got and time.ticks_diff(time.ticks_ms(), t0) < 3000:
    s.check(200)
devkit.equal("callback-receives", got, [(topic.encode(), b'{"n": 1}')])

s.link.client.ping()
devkit.equal("pingresp-handled", s.check(1000), 1)

reply = s.post_property({"temperature": 21})
devkit.equal("post-reply-code", reply.get("code"), 200)

# The same credential logging in elsewhere kicks this session off.
other = Session(cfg, cred)
other.connect()
try:
    for _ in range(20):
        s.check(200)
    devkit.fail("kicked-off", "still connected after another login")
except IotError as e:
    devkit.check("kicked-off", e.retry, "not retryable: %s %s" % (e.code, e.msg))
other.close()
s.reconnect(max_attempts=3)
got.clear()
s.publish(topic, "again")
t0 = time.ticks_ms()
while not got and time.ticks_diff(time.ticks_ms(), t0) < 3000:
    s.check(200)
devkit.equal("resubscribed-after-reconnect", got, [(topic.encode(), b"again")])
s.close()

ds = [backoff_ms(a, 1000, 8000) for a in range(8)]
devkit.check("backoff-capped", all(500 <= d <= 8000 for d in ds) and max(ds) > 2000, repr(ds))
