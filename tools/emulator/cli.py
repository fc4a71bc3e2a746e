"""Command line: serve (no subcommand), reset, fault, product, device, show, set, publish, messages."""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from . import console, faults, registry
from .registry import RegistryError, Store

log = logging.getLogger("emulator")

EPILOG = """\
subcommands (they edit the registry; a running emulator sees the change on its next connection):
  reset PK/DN                      ResetThing: the device may register again
  show                             the registry, secrets replaced by length and sha256 prefix
  product PK[=PS] [--dynreg on|off] [--regnwl on|off]
  device PK/DN                     add a pre-registered device (the console's "add device"); says what it did
  fault set TARGET [switches]      TARGET is PK (whole product) or PK/DN; replaces TARGET's fault
  fault clear TARGET ... | --all
  fault list
  ota push PK/DN FILE --version V [--sign-method MD5|SHA256] [--module M]
      [--cut-at N [--cut-always]] [--wrong-digest] [--expired] [--slow BPS]
                                   the OTA console: a task pushed to the device (or given when it asks)
  ota status PK/DN                 the task as JSON: state, last progress step, versions reported
  set PK/DN JSON [--wait S]        the console's "set property": send {"k": v, ...} to the live device on
                                   .../thing/service/property/set and print its reply (exit 3: none)
""" + console.HELP + """\
fault switches: --on register,regnwl,https,connect (default register,regnwl) --refuse CODE --quiet --close
  --payload TEXT | --payload-hex HEX  --topic TOPIC --double --huge --delay MS --rate N --times N
  --reply-code CODE (property posts, with --on connect)
"""


def _pk_ps(text):
    pk, eq, ps = text.partition("=")
    if not eq or not pk or not ps:
        raise argparse.ArgumentTypeError("expected PK=PS")
    return pk, ps


def _pk_dn(text):
    target, _, secret = text.partition("=")
    pk, slash, dn = target.partition("/")
    if not slash or not pk or not dn:
        raise argparse.ArgumentTypeError("expected PK/DN")
    return pk, dn, secret or None


def _on_off(text):
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return text == "on"


def _kinds(text):
    kinds = list(faults.KINDS) if text == "all" else [k for k in text.split(",") if k]
    for kind in kinds:
        if kind not in faults.KINDS:
            allowed = ", ".join(faults.KINDS)
            raise argparse.ArgumentTypeError("unknown kind %r (allowed: %s, all)" % (kind, allowed))
    return kinds


class _Parser(argparse.ArgumentParser):
    """argparse that never echoes a typed PK=PS or PK/DN=DS: a secret in an error would reach a log."""

    typed = ()

    def error(self, message):
        for t in self.typed:
            if "=" in t:
                message = message.replace(t, "<value>")
        super().error(message)


def build_parser():
    p = _Parser(
        prog="python -m tools.emulator", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Local emulator of the Alibaba Cloud IoT Platform's device side "
                    "(MQTT/TLS + plain TCP + HTTPS registration).", epilog=EPILOG)
    p.add_argument("--state", required=True, help="state directory (registry.json, CA); created if missing")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8883, help="MQTT over TLS port (0: ephemeral)")
    p.add_argument("--tcp-port", type=int, default=1883,
                   help="plain MQTT port, securemode 3 only (0: ephemeral)")
    p.add_argument("--https-port", type=int, default=8443, help="HTTPS registration port (0: ephemeral)")
    p.add_argument("--product", action="append", type=_pk_ps, default=[], metavar="PK=PS",
                   help="add or update a product (dynamic registration on)")
    p.add_argument("--device", action="append", type=_pk_dn, default=[], metavar="PK/DN",
                   help="add a pre-registered device (PK/DN=DS also sets its DeviceSecret)")
    p.add_argument("--regnwl", action="append", default=[], metavar="PK", help="allow regnwl for the product")
    p.add_argument("--no-dynreg", action="append", default=[], metavar="PK",
                   help="turn dynamic registration off for the product")
    p.add_argument("--register-linger", type=float, default=15.0, metavar="S",
                   help="close a registration session without DISCONNECT after S seconds (default 15)")
    p.add_argument("--tls-fault", choices=faults.TLS_FAULTS, default="none",
                   help="serve an expired cert, a cert for another host, one from an unknown CA, "
                        "or plain TCP on the TLS and HTTPS ports")
    p.add_argument("--plain-tls-port", action="store_true", help="same as --tls-fault plain")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    sub = p.add_subparsers(dest="cmd", metavar="SUBCOMMAND", parser_class=_Parser)
    r = sub.add_parser("reset", help="ResetThing for PK/DN")
    r.add_argument("target", type=_pk_dn, metavar="PK/DN")
    sub.add_parser("show", help="print the registry without secrets")
    pr = sub.add_parser("product", help="add or change a product")
    pr.add_argument("spec", metavar="PK[=PS]")
    pr.add_argument("--dynreg", type=_on_off, dest="set_dynreg", metavar="on|off")
    pr.add_argument("--regnwl", type=_on_off, dest="set_regnwl", metavar="on|off")
    dv = sub.add_parser("device", help="add a pre-registered device")
    dv.add_argument("target", type=_pk_dn, metavar="PK/DN")
    f = sub.add_parser("fault", help="fault switches")
    fsub = f.add_subparsers(dest="fault_cmd", metavar="ACTION", required=True, parser_class=_Parser)
    fs = fsub.add_parser("set", help="set TARGET's fault (replaces it)")
    fs.add_argument("target", metavar="PK|PK/DN")
    fs.add_argument("--on", type=_kinds, default=None)
    fs.add_argument("--refuse", type=int, metavar="CODE")
    after = fs.add_mutually_exclusive_group()
    after.add_argument("--quiet", action="store_const", const="quiet", dest="after")
    after.add_argument("--close", action="store_const", const="close", dest="after")
    payload = fs.add_mutually_exclusive_group()
    payload.add_argument("--payload", metavar="TEXT")
    payload.add_argument("--payload-hex", metavar="HEX")
    fs.add_argument("--topic")
    fs.add_argument("--double", action="store_true")
    fs.add_argument("--huge", action="store_true")
    fs.add_argument("--delay", type=int, metavar="MS")
    fs.add_argument("--rate", type=int, metavar="N")
    fs.add_argument("--times", type=int, metavar="N")
    fs.add_argument("--reply-code", type=int, metavar="CODE")
    fc = fsub.add_parser("clear", help="remove faults")
    fc.add_argument("targets", nargs="*", metavar="PK|PK/DN")
    fc.add_argument("--all", action="store_true")
    fsub.add_parser("list", help="print the faults as JSON")
    st = sub.add_parser("set", help="set properties on a live device, as the console does")
    st.add_argument("target", type=_pk_dn, metavar="PK/DN")
    st.add_argument("params", type=_json_object, metavar="JSON")
    st.add_argument("--wait", type=float, default=10.0, metavar="S",
                    help="seconds to wait for the device's reply (default 10; 0: do not wait)")
    console.add_parsers(sub)
    osub = _ota_parser(sub)
    # No abbreviated options: a typo must not be taken for another option (nor its value echoed).
    for parser in (p, *sub.choices.values(), *fsub.choices.values(), *osub.choices.values()):
        parser.allow_abbrev = False
    return p


def _ota_parser(sub):
    o = sub.add_parser("ota", help="the OTA console: push a package to a device, show its task")
    osub = o.add_subparsers(dest="ota_cmd", metavar="ACTION", required=True, parser_class=_Parser)
    op = osub.add_parser("push", help="create PK/DN's task (replaces one) and push it when the device is "
                                      "online; a device that asks (firmware/get) is answered with it")
    op.add_argument("target", type=_pk_dn, metavar="PK/DN")
    op.add_argument("file", metavar="FILE", help="the package (make ota-package builds one)")
    op.add_argument("--version", required=True, metavar="V", help="the version the package brings")
    op.add_argument("--sign-method", choices=("MD5", "SHA256"), default="MD5")
    op.add_argument("--module", metavar="M", help="the OTA module (default: the default module)")
    op.add_argument("--cut-at", type=int, action="append", metavar="N",
                    help="fault: the download is cut at byte N (once; repeat for more cuts)")
    op.add_argument("--cut-always", action="store_true", help="fault: with --cut-at, every download is cut")
    op.add_argument("--wrong-digest", action="store_true", help="fault: the push carries a wrong digest")
    op.add_argument("--expired", action="store_true", help="fault: the URL has expired (HTTP 403)")
    op.add_argument("--slow", type=int, metavar="BPS", help="fault: serve the file at BPS bytes/s")
    os_ = osub.add_parser("status", help="print PK/DN's task as JSON (state, last progress step, versions)")
    os_.add_argument("target", type=_pk_dn, metavar="PK/DN")
    return osub


def run_ota(store, args):
    from . import ota

    pk, dn, _ = args.target
    if args.ota_cmd == "push":
        if args.cut_always and not args.cut_at:
            raise RegistryError("--cut-always needs --cut-at N")
        if any(n <= 0 for n in args.cut_at or ()) or args.slow is not None and args.slow <= 0:
            raise RegistryError("--cut-at and --slow take a positive number")
        t = ota.create(store, pk, dn, args.file, args.version, args.sign_method, args.module, args.cut_at,
                       args.cut_always, args.wrong_digest, args.expired, args.slow)
        print("ota task %s/%s: version %s, %d bytes, md5 %s, sha256 %s" % (
            pk, dn, t["version"], t["size"], t["md5"], t["sha256"]))
    else:
        print(json.dumps(ota.status(store, pk, dn), indent=1, sort_keys=True))
    return 0


def _json_object(text):
    try:
        v = json.loads(text)
    except ValueError:
        v = None
    if not isinstance(v, dict) or not v:
        raise argparse.ArgumentTypeError('expected a non-empty JSON object, e.g. \'{"LightSwitch": 1}\'')
    return v


def seed(store, args):
    """Apply --product/--device/--regnwl/--no-dynreg to the registry."""
    if not (args.product or args.device or args.regnwl or args.no_dynreg):
        return
    with store.edit() as data:
        for pk, ps in args.product:
            registry.put_product(data, pk, ps)
        for pk in args.regnwl:
            registry.put_product(data, pk, regnwl=True)
        for pk in args.no_dynreg:
            registry.put_product(data, pk, dynreg=False)
        for pk, dn, secret in args.device:
            registry.put_device(data, pk, dn, secret=secret)


def run_subcommand(store, args):
    if args.cmd == "show":
        print(json.dumps(registry.redacted(store.read()), indent=1, sort_keys=True))
    elif args.cmd == "reset":
        pk, dn, _ = args.target
        with store.edit() as data:
            registry.reset(data, pk, dn)
        print("reset %s/%s" % (pk, dn))
    elif args.cmd == "product":
        pk, _, ps = args.spec.partition("=")
        with store.edit() as data:
            registry.put_product(data, pk, ps or None, dynreg=args.set_dynreg, regnwl=args.set_regnwl)
    elif args.cmd == "device":
        print(add_device(store, *args.target))
    elif args.cmd == "fault":
        run_fault(store, args)
    elif args.cmd == "set":
        return run_set(store, args)
    elif args.cmd in ("publish", "messages"):
        return console.run(store, args)
    elif args.cmd == "ota":
        return run_ota(store, args)
    return 0


def add_device(store, pk, dn, secret):
    """The `device` subcommand; returns the line saying what it did (never the secret)."""
    key = registry.device_key(pk, dn)
    with store.edit() as data:
        new = key not in data["devices"]
        dev = registry.put_device(data, pk, dn, secret=secret)
        dynreg = data["products"][pk]["dynreg"]
    if new:
        what = "device %s added (pre-registered)" % key
    else:
        what = "device %s exists (%s): kept" % (key, "activated" if dev["activated"] else "not activated")
    if secret:
        what += "; DeviceSecret set (%d chars, sha256 %s)" % (len(secret), registry.fingerprint(secret))
    elif new:
        what += "; dynamic registration is %s for %s" % ("on" if dynreg else "off", pk)
    return what


def run_set(store, args):
    pk, dn, _ = args.target
    key = registry.device_key(pk, dn)
    mid = str(int(time.time() * 1000) % 10**9)
    with store.edit() as data:
        if key not in data["devices"]:
            raise RegistryError("unknown device %s" % key)
        data.setdefault("downlink", []).append({"target": key, "id": mid, "params": args.params})
    if args.wait <= 0:
        print("property set id=%s queued for %s" % (mid, key))
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        reply = store.read().get("set_replies", {}).get(mid)
        if reply is not None:
            if "error" in reply:
                print("emulator: %s is offline: property set not sent" % key, file=sys.stderr)
                return 3
            print(json.dumps(reply, sort_keys=True))
            return 0
        time.sleep(0.05)
    with store.edit() as data:  # not delivered later, by an emulator started after this gave up
        data["downlink"] = [d for d in data.get("downlink", []) if d["id"] != mid]
    print("emulator: no reply from %s within %g s (is it running, and subscribed to its property/set "
          "topic? is an emulator serving this --state?)" % (key, args.wait), file=sys.stderr)
    return 3


def run_fault(store, args):
    if args.fault_cmd == "list":
        print(json.dumps(store.read().get("faults", {}), indent=1, sort_keys=True))
        return
    if args.fault_cmd == "clear":
        if not args.all and not args.targets:
            raise RegistryError("fault clear needs TARGET ... or --all")
        with store.edit() as data:
            for target in (list(data["faults"]) if args.all else args.targets):
                data["faults"].pop(target, None)
        return
    pk, _, dn = args.target.partition("/")
    if not registry.valid_pk(pk) or (dn and not registry.valid_dn(dn)):
        raise RegistryError("bad fault target %r: PK or PK/DN" % args.target)
    payload = args.payload.encode() if args.payload is not None else None
    if args.payload_hex is not None:
        try:
            payload = bytes.fromhex(args.payload_hex)
        except ValueError as e:
            raise faults.FaultError("--payload-hex: %s" % e) from e
    fault = faults.make(on=args.on, refuse=args.refuse, after=args.after, payload=payload, topic=args.topic,
                        double=args.double, huge=args.huge, delay_ms=args.delay, rate=args.rate,
                        times=args.times, reply_code=args.reply_code)
    with store.edit() as data:
        data["faults"][args.target] = fault


def _setup_logging(level):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("emulator: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
    # amqtt's own logs name clients and packets; keep them to real problems.
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    logging.getLogger("transitions").setLevel(logging.ERROR)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


async def serve(args):
    from .app import Emulator  # amqtt is imported only when serving

    tls_fault = "plain" if args.plain_tls_port else args.tls_fault
    emu = Emulator(args.state, host=args.host, port=args.port, tcp_port=args.tcp_port,
                   https_port=args.https_port, register_linger=args.register_linger, tls_fault=tls_fault)
    loop = asyncio.get_running_loop()
    # A device that drops mid-handshake is normal traffic here, not an error worth a traceback.
    loop.set_exception_handler(lambda _loop, ctx: log.debug("asyncio: %s", ctx.get("message")))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await emu.start()
    print(emu.ready_line(), flush=True)
    try:
        await stop.wait()
    finally:
        await emu.stop()


def main(argv=None):
    _Parser.typed = tuple(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    store = Store(args.state)
    try:
        if args.cmd:
            if not os.path.isdir(args.state):
                raise RegistryError("no state directory %s" % args.state)
            seed(store, args)
            return run_subcommand(store, args)
        os.makedirs(args.state, mode=0o700, exist_ok=True)
        seed(store, args)
        asyncio.run(serve(args))
        return 0
    except (RegistryError, faults.FaultError, ValueError) as e:
        print("emulator: error: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("emulator: error: %s" % e, file=sys.stderr)
        return 1
