# otajob.parse on the pushes the platform sends (help.aliyun.com "OTA update"; AliOS-Things uOTA
# ota_transport_mqtt.c: with signMethod the digest is "sign", without it "md5"; digestsign optional) and on
# what the package refuses with -1 and a reason.
import devkit

from aliyun_iot.otajob import parse

MD5 = "93230c3bde425a9d7984a594ac55ea1e"
SHA = "a" * 64
BASE = {"size": 4252, "version": "2.0.0", "url": "https://ota.example/p.bin?Expires=1", "isDiff": 0}


def task(**kw):
    d = dict(BASE)
    d.update(kw)
    return parse(d)


for name, kw, sm, dig in (
    ("md5-spelling-Md5", {"signMethod": "Md5", "sign": MD5.upper(), "md5": MD5}, "MD5", MD5),
    ("md5-spelling-MD5", {"signMethod": "MD5", "sign": MD5}, "MD5", MD5),
    ("sha256-spelling-Sha256", {"signMethod": "Sha256", "sign": SHA, "md5": MD5}, "SHA256", SHA),
    ("sha256-spelling-SHA-256", {"signMethod": "SHA-256", "sign": SHA}, "SHA256", SHA),
    ("old-push-md5-only", {"md5": MD5}, "MD5", MD5),
    ("with-digestsign", {"signMethod": "MD5", "sign": MD5, "digestsign": "A4WOPSYHJ6DDDJD9"}, "MD5", MD5),
    ("module-default", {"signMethod": "MD5", "sign": MD5, "module": "default"}, "MD5", MD5),
):
    t, why = task(**kw)
    devkit.check(name, why is None and t["sm"] == sm and t["digest"] == dig, repr((t, why)))

for name, kw, want in (
    ("refuse-diff", {"isDiff": 1, "md5": MD5}, "diff"),
    ("refuse-mqtt", {"dProtocol": "mqtt", "streamId": 1397345, "md5": MD5, "url": None}, "MQTT download"),
    ("refuse-multi", {"files": [{"fileName": "a"}], "md5": MD5}, "multi-file"),
    ("refuse-firmware", {"module": "firmware", "md5": MD5}, "MicroPython image"),
    ("refuse-module", {"module": "MCU2", "md5": MD5}, "module MCU2"),
    ("refuse-sha1", {"signMethod": "SHA1", "sign": "a" * 40}, "signMethod SHA1"),
    ("refuse-short-digest", {"signMethod": "SHA256", "sign": MD5}, "digest"),
    ("refuse-http", {"url": "http://ota.example/p.bin", "md5": MD5}, "task needs"),
    ("refuse-no-size", {"size": None, "md5": MD5}, "task needs"),
    ("refuse-long-url", {"url": "https://" + "a" * 2000, "md5": MD5}, "task needs"),
):
    t, why = task(**kw)
    devkit.check(name, t is None and isinstance(why, str) and why.startswith(want), repr((t, why)))
