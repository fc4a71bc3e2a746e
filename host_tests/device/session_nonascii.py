# Chinese text both ways on one connection, through whichever umqtt.simple generation UMQTT_API picks
# (argv[1]: a file to create once subscribed, so the host can send its property set): a property post
# and a custom publish with {"name": "温度传感器"}, the emulator's property set with Chinese text, then an
# ASCII post, all answered on the first connection. umqtt.simple counts len() of a str in characters:
# anything the package hands it as a non-ASCII str corrupts the stream and the rest times out.
import json
import time

import devkit

import aliyun_iot
from aliyun_iot import store

NAME = {"name": "\u6e29\u5ea6\u4f20\u611f\u5668"}  # 温度传感器


def until(cond, ms):
    t0 = time.ticks_ms()
    while not cond() and time.ticks_diff(time.ticks_ms(), t0) < ms:
        s.check(200)
    return cond()


s = aliyun_iot.connect()
cred = store.load()
topic = "/%s/%s/user/echo" % (cred["pk"], cred["dn"])
got, sets = [], []
s.subscribe(topic, lambda t, m: got.append(m))
s.on_property_set(lambda p: sets.append(p))
s.check(500)  # the SUBACKs

reply = s.post_property(NAME)
devkit.equal("chinese post acknowledged", reply.get("code"), 200)
s.publish(topic, json.dumps(NAME))  # a str, as an application writes it
until(lambda: got, 5000)
devkit.equal("chinese publish received", [json.loads(m) for m in got], [NAME])

with open(devkit.arg(1), "w") as f:
    f.write("ready")
until(lambda: sets, 20000)
devkit.equal("chinese set handled", sets, [NAME])
s.check(300)  # the reply goes out as the handler returns

reply = s.post_property({"temperature": 21})
devkit.equal("ascii post after, same connection", (reply.get("code"), s.connects), (200, 1))
s.close()
