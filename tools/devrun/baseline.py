# The bare baseline a board pays for any TLS MQTT application, without this
# package: Wi-Fi up (the board's network module), umqtt.simple over verified
# TLS (the endpoint's root loaded from flash), CONNECT with a login given by
# the host, one property post and its reply. argv: host port ca client_id
# user password topic; ca "-": plain MQTT, for a build without TLS. Prints
# RESULT online and HELD <bytes after a gc>.
import gc
import sys
import time

if sys.argv[3] != "-":  # imported first, as it always was: moving it changes this baseline's heap edge
    import ssl

import network
from umqtt.simple import MQTTClient

host, port, ca, cid, user, pw, topic = sys.argv[1:8]
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("lab", "lab-password")
while not w.isconnected():
    time.sleep_ms(10)
ctx = None
if ca != "-":
    with open(ca, "rb") as f:
        der = f.read()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=der)
    der = None
got = []
c = MQTTClient(cid, host, int(port), user, pw, 300, ssl=ctx)
c.set_callback(lambda t, m: got.append(m))
c.connect(True, 10)
c.sock.setblocking(True)
c.subscribe(topic + "_reply")
c.publish(topic, b'{"id":"1","version":"1.0","params":{"online":1},"method":"thing.event.property.post"}')
while not got:
    c.wait_msg()
print("RESULT online")
gc.collect()
print("HELD %d" % gc.mem_alloc())
c.disconnect()
