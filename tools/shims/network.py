# Host stand-in for the ESP32 `network` module (station interface only), written from
# ports/esp32/network_wlan.c and modnetwork_globals.h (the same at v1.23.0 .. v1.28.0).
#   VBOARD_WIFI           "ssid:password[,ssid2:password2]" networks in range;
#                         unset means any SSID joins with any password
#   VBOARD_WIFI_DELAY_MS  time one connection attempt takes (default 30; a board: 1-3 s)
#   VBOARD_WIFI_SEQ       the outcome of each attempt after connect(), e.g. "201,202,join":
#                         a disconnect reason, or "join"; the last one repeats (an access
#                         point that boots more slowly than the board). Overrides VBOARD_WIFI.
# What the port does, and this stand-in with it:
# - connect() starts an attempt; every failed attempt raises STA_DISCONNECTED and the
#   event handler calls esp_wifi_connect() again at once, forever unless
#   config(reconnects=n) (network_wlan.c@v1.28.0 network_wlan_wifi_event_handler);
# - the reason of the last failed attempt is kept (wifi_sta_disconn_reason) until an
#   IP is obtained, while the next attempt runs: status() goes on reporting it;
# - status(): 1010 with an IP; 201, 210, 211, 212 as they are; 202 and 205 as 202
#   (STAT_WRONG_PASSWORD); 8 (ASSOC_LEAVE, after disconnect()) as 1000; any other
#   reason (15: 4-way handshake timeout, 200, 203, 204) as 1001 while the port is
#   still retrying, and as itself once the retries are used up (network_wlan_status);
# - a wrong WPA2 password first fails with reason 15, i.e. status() says "connecting",
#   and only later with 202 (micropython issue 11625): modelled as 15, then 202;
# - the flags are module-wide (C statics), shared by every WLAN object.
import os
import time

STA_IF = 0
AP_IF = 1
# modnetwork_globals.h@v1.28.0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 211
STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD = 212

_ASSOC_LEAVE = 8
_CONNECTION_FAIL = 205
_HANDSHAKE_15 = 15  # WIFI_REASON_4WAY_HANDSHAKE_TIMEOUT

# network_wlan.c's statics
_st = {"requested": False, "connected": False, "reason": 0, "conf": 0, "t0": 0, "seq": None}


def _env(name):
    try:
        return os.getenv(name)
    except AttributeError:
        return None


def _ms():
    return int(time.time() * 1000)


def _plan(ssid, key):
    # the outcome of each attempt, the last one repeating
    seq = _env("VBOARD_WIFI_SEQ")
    if seq:
        return [s if s == "join" else int(s) for s in seq.split(",")]
    nets = _env("VBOARD_WIFI")
    if nets:
        known = {}
        for item in nets.split(","):
            name, _, pw = item.partition(":")
            known[name] = pw
        if ssid not in known:
            return [STAT_NO_AP_FOUND]
        if known[ssid] != (key or ""):
            return [_HANDSHAKE_15, STAT_WRONG_PASSWORD]
    return ["join"]


def _run():
    # Advance the port's own retrying to now.
    if not _st["requested"] or _st["connected"]:
        return
    seq = _st["seq"]
    n = (_ms() - _st["t0"]) // max(1, int(_env("VBOARD_WIFI_DELAY_MS") or 30))  # attempts finished
    conf = _st["conf"]
    if conf:
        n = min(n, conf)  # network_wlan.c: the handler stops reconnecting after conf attempts
    for i in range(n):
        out = seq[min(i, len(seq) - 1)]
        if out == "join":
            _st["connected"] = True
            _st["reason"] = 0  # IP_EVENT_STA_GOT_IP clears it
            return
        _st["reason"] = out
    _st["tries"] = n


class WLAN:
    def __init__(self, interface=STA_IF):
        self._if = interface
        self._active = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            _st["requested"] = _st["connected"] = False

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        # network_wlan_connect: reconnects counter reset, the last reason is NOT cleared
        _st["seq"] = _plan(ssid, key)
        _st["t0"] = _ms()
        _st["tries"] = 0
        _st["connected"] = False
        _st["requested"] = True

    def disconnect(self):
        # network_wlan_disconnect: esp_wifi_disconnect() ends the link or the attempt with reason 8
        # (ASSOC_LEAVE), which status() reports as STAT_IDLE, also through the next connect()'s first attempt
        _run()
        if _st["requested"] or _st["connected"]:
            _st["reason"] = _ASSOC_LEAVE
        _st["requested"] = _st["connected"] = False

    def status(self, param=None):
        if param == "rssi":
            if not _st["connected"]:
                raise OSError(-1)
            return -55
        if param is not None:
            raise ValueError("unknown status param")
        _run()
        if _st["connected"]:
            return STAT_GOT_IP
        r = _st["reason"]
        if r in (STAT_NO_AP_FOUND, 210, 211, 212):
            return r
        if r in (STAT_WRONG_PASSWORD, _CONNECTION_FAIL):
            return STAT_WRONG_PASSWORD
        if r == _ASSOC_LEAVE:
            return STAT_IDLE
        conf = _st["conf"]
        if _st["requested"] and (conf == 0 or _st.get("tries", 0) < conf):
            return STAT_CONNECTING
        if r == 0:
            return STAT_IDLE
        return r

    def isconnected(self):
        _run()
        return _st["connected"]

    def ifconfig(self, *args):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def config(self, *args, **kwargs):
        if "reconnects" in kwargs:
            r = kwargs["reconnects"]
            _st["conf"] = 0 if r == -1 else r + 1  # network_wlan.c: -1 retries for ever
            return None
        if args and args[0] == "mac":
            import machine

            return machine.unique_id()
        if args and args[0] == "reconnects":
            return _st["conf"] - 1
        return None
