"""aliyun_iot.creds (the signature) on both runtimes: docs/protocol.md known answers, random hmac vectors."""

import hashlib
import hmac
import json
import random
import string

from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script

METHODS = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1, "hmacmd5": hashlib.md5}
_KEY_LENGTHS = (0, 1, 16, 63, 64, 65, 100, 128, 200)  # around the 64-byte block size


def make_vectors(seed):
    rnd = random.Random(seed)
    hmac_vectors = []
    for method, h in METHODS.items():
        for n in _KEY_LENGTHS + tuple(rnd.randrange(0, 300) for _ in range(6)):
            key = rnd.randbytes(n)
            msg = rnd.randbytes(rnd.choice((0, 1, 55, 64, rnd.randrange(0, 400))))
            hmac_vectors.append([method, key.hex(), msg.hex(), hmac.new(key, msg, h).hexdigest()])
    sign_vectors = []
    alphabet = string.ascii_letters + string.digits + "-_@.:|,="
    for method, h in METHODS.items():
        for _ in range(8):
            names = rnd.sample(["clientId", "deviceName", "productKey", "timestamp", "random", "a", "Z"], 4)
            params = {k: "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 40))) for k in names}
            secret = "".join(rnd.choice(alphabet) for _ in range(rnd.choice((16, 32, 70))))
            plain = "".join(k + params[k] for k in sorted(params))
            sign_vectors.append(
                [method, secret, params, hmac.new(secret.encode(), plain.encode(), h).hexdigest()]
            )
    return {"hmac": hmac_vectors, "sign": sign_vectors}


def test_sign_known_answers_and_random_vectors(runtime, tmp_path):
    seed = random.randrange(1 << 32)
    vectors = tmp_path / "vectors.json"
    vectors.write_text(json.dumps(make_vectors(seed)))
    res = run_script(runtime, device_script("sign_kat.py"), args=[vectors], timeout=120)
    oks = set(assert_device_ok(res))
    want = {
        "kat1 plaintext",
        "kat1 hmacsha1",
        "kat2 hmacsha256",
        "random hmac vectors",
        "random sign vectors",
    }
    assert want <= oks, "seed %d: missing %s\n%s" % (seed, sorted(want - oks), res.stdout)
