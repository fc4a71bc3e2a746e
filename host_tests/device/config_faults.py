# Every bad config.json is refused before the network is touched: argv[1] is a
# JSON file of cases {"name", "config", "key"}; for each, boot_flow.run() must
# raise IotError naming the key, with network.WLAN never constructed.
import devkit
import network

from aliyun_iot import IotError, boot_flow


class _NoRadio:
    def __init__(self, *args):
        raise AssertionError("the network was touched")


network.WLAN = _NoRadio
cases = devkit.load_json(devkit.arg(1))
for case in cases:
    import json

    with open("config.json", "w") as f:
        f.write(json.dumps(case["config"]))
    try:
        boot_flow.run()
        devkit.fail(case["name"], "accepted")
    except IotError as e:
        devkit.check(
            case["name"], case["key"] in e.msg and e.code.startswith("config"),
            "message does not name %s: %s (%s)" % (case["key"], e.msg, e.code)
        )
    except Exception as e:  # noqa: BLE001 - anything else is the failure being reported
        devkit.fail(case["name"], "%s: %s" % (type(e).__name__, e))
