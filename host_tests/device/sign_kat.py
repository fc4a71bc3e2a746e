# Signing on the device runtime: the known answers of docs/protocol.md, then
# host-generated vectors (CPython's hmac) for random keys, including keys longer
# than the 64-byte block, and random messages and parameter sets.
# argv[1]: JSON file {"hmac": [[method, key_hex, msg_hex, mac_hex], ...],
#                     "sign": [[method, secret, {params}, hex], ...]}
from binascii import hexlify, unhexlify

import devkit

from aliyun_iot import creds as sign

# docs/protocol.md, "Known answers"
kat1 = sign.sign(
    "hmacsha1",
    "secret",
    {"clientId": "12345", "deviceName": "device", "productKey": "pk", "timestamp": "789"},
)
devkit.equal(
    "kat1 plaintext",
    sign.plaintext({"clientId": "12345", "deviceName": "device", "productKey": "pk", "timestamp": "789"}),
    "clientId12345deviceNamedeviceproductKeypktimestamp789",
)
devkit.equal("kat1 hmacsha1", kat1.upper(), "FAFD82A3D602B37FB0FA8B7892F24A477F851A14")
kat2 = sign.sign(
    "hmacsha256",
    "ffFnFlKQW3HYjjPR",
    {"deviceName": "Example_dyn1", "productKey": "a1ExpAkj9Hi", "random": "7y4Jg5xdKCy9W2i"},
)
devkit.equal(
    "kat2 hmacsha256", kat2.lower(), "d3b560d5be0c9c19749470e85d912b65685fa4b20edcbd179ccfe98fcca23d5e"
)

path = devkit.arg(1)
if path is None:
    devkit.skip("no host vectors given")
v = devkit.load_json(path)

bad = 0
longest = 0
for method, key_hex, msg_hex, want in v["hmac"]:
    key = unhexlify(key_hex)
    got = hexlify(sign.hmac_digest(method, key, unhexlify(msg_hex))).decode()
    longest = max(longest, len(key))
    if got != want:
        bad += 1
        devkit.fail("hmac", "%s key of %d bytes, message of %d bytes" % (method, len(key), len(msg_hex) // 2))
devkit.check(
    "random hmac vectors", bad == 0 and len(v["hmac"]) > 0, "%d of %d differ" % (bad, len(v["hmac"]))
)
devkit.check("keys longer than the block", longest > 64, "longest key %d bytes" % longest)

bad = 0
for method, secret, params, want in v["sign"]:
    if sign.sign(method, secret, params).lower() != want:
        bad += 1
        devkit.fail("sign", "%s over %d parameters" % (method, len(params)))
devkit.check(
    "random sign vectors", bad == 0 and len(v["sign"]) > 0, "%d of %d differ" % (bad, len(v["sign"]))
)
devkit.info("checked %d hmac and %d sign vectors" % (len(v["hmac"]), len(v["sign"])))
