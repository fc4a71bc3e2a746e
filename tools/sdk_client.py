"""Drive the official Alibaba Cloud IoT Python SDK (aliyun-iot-linkkit 1.2.13) against an endpoint.

Runs under .venv-sdk's python (the SDK needs paho-mqtt < 2):
  .venv-sdk/bin/python tools/sdk_client.py --host 127.0.0.1 --port 8883 --ca ca.pem \\
      --product-key PK --device-name DN [--mode register|regnwl|https] [--https-port 8443]
The ProductSecret comes from --product-secret or the env var ALIYUN_PRODUCT_SECRET.
It registers the device, connects with what it was issued, posts one property and waits for the
`_reply`. It prints ONE JSON line: the wall time of each stage in ms since start (registered, connected,
acked) and per stage, the issued credential's length and sha256 prefix, never the credential itself.
On failure: a JSON line with "ok": false and the stage, one line on stderr, exit status 1.

How the SDK is pointed at a local endpoint, without editing the installed package:
- MQTT: LinkKit.config_mqtt(port=..., cadata=<CA PEM>, endpoint=<host>) is the SDK's own API.
- HTTPS registration: the SDK builds `https://iot-auth.{host_name}.aliyuncs.com/auth/register/device`
  with no override, so --mode https wraps the urlopen that linkkit.linkkit uses (at runtime only) to
  send that request to https://<host>:<https-port>/auth/register/device. TLS is still verified with
  the CA given.
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse

PROPERTY = {"LightSwitch": 1}


class Failed(Exception):
    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage


def fingerprint(value):
    return {"len": len(value), "sha256_4": hashlib.sha256(value.encode()).hexdigest()[:4]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8883, help="MQTT over TLS port")
    p.add_argument("--https-port", type=int, default=8443, help="HTTPS registration port (--mode https)")
    p.add_argument("--ca", required=True, help="PEM file of the CA that signed the server certificate")
    p.add_argument("--product-key", required=True)
    p.add_argument("--product-secret", default=os.environ.get("ALIYUN_PRODUCT_SECRET"))
    p.add_argument("--device-name", required=True)
    p.add_argument("--mode", choices=("register", "regnwl", "https"), default="register")
    p.add_argument("--keepalive", type=int, default=60)
    p.add_argument("--timeout", type=float, default=30, help="seconds allowed for each stage")
    args = p.parse_args(argv)
    if not args.product_secret:
        p.error("no ProductSecret: pass --product-secret or set ALIYUN_PRODUCT_SECRET")
    return args


class Run:
    def __init__(self, args):
        from linkkit import linkkit  # only importable in .venv-sdk

        self.lk_mod = linkkit
        self.args = args
        with open(args.ca, encoding="ascii") as f:
            self.ca_pem = f.read()
        self.t0 = time.monotonic()
        self.marks = {}
        self.credential = None

    def ms(self):
        return round((time.monotonic() - self.t0) * 1000, 1)

    def make(self, **kw):
        a = self.args
        lk = self.lk_mod.LinkKit(host_name="cn-shanghai", product_key=a.product_key,
                                 device_name=a.device_name, **kw)
        lk.config_mqtt(port=a.port, cadata=self.ca_pem, endpoint=a.host, keep_alive=a.keepalive,
                       auto_reconnect_min_sec=1, auto_reconnect_max_sec=2)
        return lk

    def wait(self, event, stage):
        if not event.wait(self.args.timeout):
            raise Failed(stage, "no answer within %.0f s" % self.args.timeout)

    def register_mqtt(self, auth_type):
        done = threading.Event()
        result = {}
        lk = self.make(device_secret="", product_secret=self.args.product_secret, auth_type=auth_type)

        def on_register(rc, value, userdata):
            result.update(rc=rc, ds=value)
            done.set()

        def on_regnwl(rc, client_id, username, password):
            result.update(rc=rc, client_id=client_id, username=username, password=password)
            done.set()

        if auth_type == "register":
            lk.on_device_dynamic_register = on_register
        else:
            lk.on_device_dynamic_register_nwl_reply = on_regnwl
        lk.connect_async()
        try:
            self.wait(done, "register")
        finally:
            lk.destruct()
        if result.get("rc") != 0:
            raise Failed("register", "the SDK reported registration error %r" % result.get("rc"))
        self.marks["registered"] = self.ms()
        if auth_type == "register":
            self.credential = result["ds"]
            return {"device_secret": result["ds"]}
        self.credential = result["password"]
        return {"device_secret": "", "client_id": result["client_id"], "username": result["username"],
                "password": result["password"]}

    def patch_https(self):
        """Send the SDK's hard-wired iot-auth URL to the local HTTPS port instead (runtime only)."""
        request = self.lk_mod.urllib.request
        real_urlopen = request.urlopen
        local = "https://%s:%d" % (self.args.host, self.args.https_port)

        def urlopen(url, *a, **kw):
            parts = urllib.parse.urlsplit(url)
            if parts.hostname and parts.hostname.startswith("iot-auth."):
                url = local + parts.path
            return real_urlopen(url, *a, **kw)

        request.urlopen = urlopen

    def connect_and_post(self, lk, https=False):
        connected, acked, registered = threading.Event(), threading.Event(), threading.Event()
        outcome = {}

        def on_connect(session_flag, rc, userdata):
            outcome["connect_rc"] = rc
            if rc == 0:
                connected.set()

        def on_register(rc, value, userdata):
            outcome["register_rc"] = rc
            if rc == 0:
                self.credential = value
                self.marks["registered"] = self.ms()
            registered.set()

        def on_post(request_id, code, data, message, userdata):
            outcome.update(post_id=request_id, post_code=code)
            acked.set()

        lk.on_connect = on_connect
        lk.on_thing_prop_post = on_post
        if https:
            lk.on_device_dynamic_register = on_register
        lk.thing_setup()
        lk.connect_async()
        try:
            if https:
                self.wait(registered, "register")
                if outcome["register_rc"] != 0:
                    rc = outcome["register_rc"]
                    raise Failed("register", "the SDK reported registration error %r" % rc)
            self.wait(connected, "connect")
            self.marks["connected"] = self.ms()
            rc, request_id = lk.thing_post_property(PROPERTY)
            if rc != 0:
                raise Failed("post", "thing_post_property returned %r" % rc)
            self.wait(acked, "post")
            if outcome.get("post_code") != 200:
                raise Failed("post", "reply code %r" % outcome.get("post_code"))
            self.marks["acked"] = self.ms()
            outcome["request_id"] = request_id
        finally:
            lk.disconnect()
            lk.destruct()
        return outcome

    def run(self):
        a = self.args
        if a.mode == "https":
            self.patch_https()
            lk = self.make(device_secret="", product_secret=a.product_secret)
            outcome = self.connect_and_post(lk, https=True)
        else:
            cred = self.register_mqtt(a.mode)
            lk = self.make(**cred)
            outcome = self.connect_and_post(lk)
        m = self.marks
        return {
            "ok": True, "mode": a.mode, "product_key": a.product_key, "device_name": a.device_name,
            "registered_ms": m["registered"], "connected_ms": m["connected"], "acked_ms": m["acked"],
            "stages_ms": {"register": m["registered"], "connect": round(m["connected"] - m["registered"], 1),
                          "post": round(m["acked"] - m["connected"], 1)},
            "post_id": outcome["request_id"],
            "credential": fingerprint(self.credential or ""),
            "sdk": "aliyun-iot-linkkit 1.2.13",
        }


def main(argv=None):
    args = parse_args(argv)
    run = None
    try:
        run = Run(args)
        print(json.dumps(run.run()), flush=True)
        return 0
    except ImportError as e:
        print("sdk_client: cannot import the SDK (run me with .venv-sdk/bin/python): %s" % e, file=sys.stderr)
        return 1
    except (Failed, OSError) as e:
        stage = getattr(e, "stage", "setup")
        print(json.dumps({"ok": False, "mode": args.mode, "stage": stage, "error": str(e),
                          "marks_ms": run.marks if run else {}}), flush=True)
        print("sdk_client: %s failed: %s" % (stage, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
