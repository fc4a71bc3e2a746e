"""docs/your-app.md as a newcomer follows it: the emulator, a virtual board, `make deploy` with the
emulator's CA, `make provision`, the page's own main.py, then the console's set, publish and messages."""

import json
import re
import subprocess

from host_tests.plugins.runtimes import REPO

PAGE = REPO / "docs" / "your-app.md"
PK, PS = "a1MyProd0001", "MyProductSecret01"
DN = "esp32-240ac4000001"
KEY = "%s/%s" % (PK, DN)


def _make(*args):
    r = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_your_app_page_end_to_end(emulator, vboard, tmp_path):
    app = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    emu = emulator(products={PK: PS}, devices=[KEY])
    board = vboard(mac="24:0a:c4:00:00:01")
    _make("deploy", "BOARD=VIRTUAL", "PORT=" + board.url, "CA=%s" % emu.ca_der)
    config = tmp_path / "emu.json"
    config.write_text(json.dumps({"product_key": PK, "product_secret": PS, "host": "localhost",
                                  "port": emu.port, "ca": "ca.der", "wdt_s": 0}))
    config.chmod(0o600)
    assert "device_name %s" % DN in _make("provision", "BOARD=VIRTUAL", "PORT=" + board.url,
                                          "CONFIG=%s" % config)
    (tmp_path / "app.py").write_text(app)
    mark = len(board.console())
    r = board.mpremote("cp", tmp_path / "app.py", ":main.py", "+", "reset")
    assert r.returncode == 0, r.stderr
    board.wait_console("aliyun_iot: state online", 30, mark)

    reply = json.loads(emu.cli("set", KEY, '{"LightSwitch": 1}').stdout)
    assert reply["code"] == 200
    board.wait_console("app: set {'LightSwitch': 1}", 10, mark)
    r = emu.cli("publish", KEY, "/%s/user/get" % KEY, "hello")
    assert r.stdout.strip() == "published 5 bytes on /%s/user/get to %s" % (KEY, KEY)
    board.wait_console("app: got b'hello'", 10, mark)
    for _ in range(100):
        rows = json.loads(emu.cli("messages", KEY, "--json").stdout)
        if rows and rows[0]["topic"] == "/%s/user/update" % KEY:
            break
    assert rows[0]["text"] == "echo hello", rows
    assert rows[1]["topic"].endswith("/thing/service/property/set_reply")
