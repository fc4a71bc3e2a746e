# What mbedTLS holds through a boot of the firmware and a second TLS session, on the unix port under
# tools/tlsmem's LD_PRELOAD counter. Runs in the board's flash directory like boot_once.py: a normal boot
# (credential stored) or a first boot (registration first). Each os.getenv("TLSMEM:<phase>") ends a phase:
#   boot           aliyun_iot.connect(): the TLS handshake(s), registration's included on a first boot
#   boot_gc        after gc.collect(): what the MQTT link holds while connected
#   connected      five property posts and their replies over the link
#   ca_loaded      a second SSLContext with the CA loaded (what a parsed RSA-2048 certificate holds)
#   second         an HTTPS GET on another TLS connection while MQTT stays up (as an OTA download would),
#                  the response read, the connection still open
#   second_closed  that connection closed and collected
#   closed         the MQTT link closed and collected
import gc
import json
import os
import socket
import ssl

import aliyun_iot


def mark(name, collect=False):
    if collect:
        gc.collect()
    os.getenv("TLSMEM:" + name)


mark("start")
s = aliyun_iot.connect()
mark("boot")
mark("boot_gc", True)
for i in range(5):
    s.post_property({"n": i})
mark("connected")
with open("config.json") as f:
    cfg = json.load(f)
host, port = cfg["auth_host"], cfg["auth_port"]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
with open(cfg["ca"], "rb") as f:
    ctx.load_verify_locations(cadata=f.read())
mark("ca_loaded")
raw = socket.socket()
raw.settimeout(5)
raw.connect(socket.getaddrinfo(host, port)[0][-1])
t = ctx.wrap_socket(raw, server_hostname=host)
t.write(b"GET /firmware.bin HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
got = 0
while got < 65536:
    try:
        b = t.read(512)
    except OSError:  # a close without close_notify (-0x7280): the response is complete
        break
    if not b:
        break
    got += len(b)
print("SECOND read %d B" % got)
mark("second")
t.close()
t = raw = ctx = None
mark("second_closed", True)
s.post_property({"n": 99})  # the link is still up
s.close()
s = None
mark("closed", True)
print("RESULT ok")
