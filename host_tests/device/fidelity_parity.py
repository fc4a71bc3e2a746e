# The stand-ins' board behaviours, the same on CPython and on the MicroPython unix port: machine.Pin's
# tables and messages per chip, network.WLAN's retrying and last-failure status, json.dumps with
# non-ASCII text, umqtt.simple's len() of a str. Each check expects the ESP32 port's behaviour; the
# V lines are compared between the two runtimes by the test.
import json
import os
import time

import devkit
import machine
import network
from umqtt.simple import MQTTClient


def setenv(k, v):
    if hasattr(os, "environ"):  # CPython: getenv reads os.environ
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    elif v is None:
        os.unsetenv(k)
    else:
        os.putenv(k, v)


def v(name, value):
    print("V %s %s" % (name, value))


# ---------------------------------------------------------------- machine.Pin
def pin_map(chip):
    # one letter per GPIO 0..49: o output, i "pin can only be input", x "invalid pin"
    setenv("VBOARD_CHIP", chip)
    out = ""
    for n in range(50):
        try:
            machine.Pin(n, machine.Pin.OUT)
            out += "o"
        except ValueError as e:
            msg = e.args[0]
            out += {"pin can only be input": "i", "invalid pin": "x"}.get(msg, "?")
    return out


def ranges(spec):
    out = ["x"] * 50
    for letter, lo, hi in spec:
        for n in range(lo, hi + 1):
            out[n] = letter
    return "".join(out)


# ports/esp32/machine_pin.h + machine_pin.c (v1.23.0 .. v1.28.0), generic builds
WANT = {
    "esp32": ranges([("o", 0, 23), ("o", 25, 27), ("o", 32, 33), ("i", 34, 39)]),
    "esp32s3": ranges([("o", 0, 21), ("o", 33, 48)]),
    "esp32c3": ranges([("o", 0, 13), ("o", 20, 21)]),
}
for chip in ("esp32", "esp32s3", "esp32c3"):
    got = pin_map(chip)
    v("pins-" + chip, got)
    devkit.equal("pin table " + chip, got, WANT[chip])
setenv("VBOARD_CHIP", "esp32")
devkit.equal("pin input mode on an input-only pin", machine.Pin(34, machine.Pin.IN).pin, 34)
devkit.raises("pin not an int", ValueError, machine.Pin, "nope")
setenv("VBOARD_SPIRAM", "1")
devkit.raises("pin 16 in the SPIRAM build", ValueError, machine.Pin, 16, machine.Pin.OUT)
setenv("VBOARD_SPIRAM", None)
setenv("VBOARD_CHIP", None)


# ---------------------------------------------------------------- network.WLAN
def statuses(wlan, ms, ssid="lab", key="pw"):
    # the distinct statuses seen while the port retries, in order
    seen = [wlan.status()]
    wlan.connect(ssid, key)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        s = wlan.status()
        if s != seen[-1]:
            seen.append(s)
        if s == network.STAT_GOT_IP:
            break
        time.sleep_ms(5)
    return seen


setenv("VBOARD_WIFI_DELAY_MS", "150")
w = network.WLAN(network.STA_IF)
w.active(True)
setenv("VBOARD_WIFI_SEQ", "201,202,15,join")
got = statuses(w, 3000)
v("wlan-seq", got)
devkit.equal("wlan slow AP: the last failure while retrying, then joined", got,
             [1000, 1001, 201, 202, 1001, 1010])
devkit.check("wlan isconnected", w.isconnected())
w.disconnect()
devkit.equal("wlan after disconnect", w.status(), network.STAT_IDLE)
setenv("VBOARD_WIFI_SEQ", None)

setenv("VBOARD_WIFI", "lab:pw")
got = statuses(w, 700, key="wrong")
v("wlan-wrong-password", got)
devkit.equal("wlan wrong password: connecting (reason 15), then 202", got, [1000, 1001, 202])
w.disconnect()
got = statuses(w, 500, ssid="elsewhere")
v("wlan-no-ap", got)
devkit.equal("wlan no AP: 201 once the first attempt fails", got, [1000, 201])
w.disconnect()

setenv("VBOARD_WIFI_SEQ", "15")
w.config(reconnects=1)
got = statuses(w, 600)
v("wlan-reconnects-used-up", got)
devkit.equal("wlan reconnects used up: the raw reason", got, [1000, 1001, 15])
w.config(reconnects=-1)
w.disconnect()
setenv("VBOARD_WIFI_SEQ", None)
setenv("VBOARD_WIFI", None)
setenv("VBOARD_WIFI_DELAY_MS", None)

# ---------------------------------------------------------------- json (py/objstr.c mp_str_print_json)
text = json.dumps({"name": "\u6e29\u5ea6\u4f20\u611f\u5668"})
v("json", text.encode())
devkit.equal("json non-ASCII raw", text, '{"name": "\u6e29\u5ea6\u4f20\u611f\u5668"}')
devkit.equal("json non-ASCII bytes", (len(text), len(text.encode())), (17, 27))
devkit.equal("json control chars", json.dumps("a\nb\x01"), '"a\\nb\\u0001"')


# ---------------------------------------------------------------- umqtt.simple: len() of a str
class _Wire:
    def __init__(self):
        self.out = bytearray()

    def write(self, buf, n=None):
        b = buf.encode() if isinstance(buf, str) else bytes(buf)
        self.out.extend(b if n is None else b[:n])
        return len(b)


c = MQTTClient("c", "h")
c.sock = _Wire()
c.publish("t", text)
v("umqtt-publish-str", bytes(c.sock.out[:4]))
devkit.equal("umqtt counts a str in characters", c.sock.out[1], 2 + 1 + 17)
devkit.equal("umqtt writes a str as UTF-8", len(c.sock.out), 2 + 2 + 1 + 27)
