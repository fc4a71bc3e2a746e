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
# Kept small on purpose: tools/ram.py loads the shims as .mpy, and every name a module adds is
# a qstr in RAM there (on a board this module is C in ROM).
import os
import time

STA_IF = 0
AP_IF = 1
# modnetwork_globals.h@v1.28.0 (also STAT_BEACON_TIMEOUT 200, STAT_HANDSHAKE_TIMEOUT 204 and the
# 210-212 NO_AP_FOUND variants, left out: nothing here uses them)
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_CONNECT_FAIL = 203

# network_wlan.c's statics: [connect requested, connected with an IP, wifi_sta_disconn_reason,
# conf_wifi_sta_reconnects (0: for ever), wifi_sta_reconnects]; then this stand-in's plan:
# [connect() time, one attempt's ms, index of the joining attempt or None, the attempts' outcomes]
_s = [False, False, 0, 0, 0, 0, 1, None, None]


def _env(name):
    try:
        return os.getenv(name)
    except AttributeError:
        return None


def _run():
    # Advance the port's own retrying to now: n attempts have ended since connect().
    s = _s
    if not s[0] or s[1]:
        return
    n = time.ticks_diff(time.ticks_ms(), s[5]) // s[6]
    if s[3]:
        n = min(n, s[3])  # network_wlan.c: the handler stops reconnecting after conf attempts
    if not n:
        return
    if s[7] is not None and n > s[7]:
        s[1] = True
        s[2] = 0  # IP_EVENT_STA_GOT_IP clears the reason
        return
    s[2] = s[8][min(n, len(s[8])) - 1]
    s[4] = n


class WLAN:
    def __init__(self, interface=STA_IF):
        self._if = interface
        self._active = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            _s[0] = _s[1] = False

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        # the outcome of each attempt, the last one repeating
        seq = ["join"]
        v = _env("VBOARD_WIFI_SEQ")
        nets = _env("VBOARD_WIFI")
        if v:
            seq = [x if x == "join" else int(x) for x in v.split(",")]
        elif nets:
            known = {}
            for item in nets.split(","):
                name, _, pw = item.partition(":")
                known[name] = pw
            if ssid not in known:
                seq = [201]
            elif known[ssid] != (key or ""):
                seq = [15, 202]  # 15: WIFI_REASON_4WAY_HANDSHAKE_TIMEOUT, then AUTH_FAIL
        # network_wlan_connect: the reconnects counter is reset, the last reason is NOT cleared
        _s[5] = time.ticks_ms()
        _s[6] = max(1, int(_env("VBOARD_WIFI_DELAY_MS") or 30))
        _s[7] = seq.index("join") if "join" in seq else None
        _s[8] = seq
        _s[4] = 0
        _s[1] = False
        _s[0] = True

    def disconnect(self):
        # network_wlan_disconnect: esp_wifi_disconnect() ends the link or the attempt with reason 8
        # (ASSOC_LEAVE), which status() reports as STAT_IDLE, also through the next connect()'s first attempt
        _run()
        if _s[0] or _s[1]:
            _s[2] = 8
        _s[0] = _s[1] = False

    def status(self, param=None):
        if param == "rssi":
            if not _s[1]:
                raise OSError(-1)
            return -55
        if param is not None:
            raise ValueError("unknown status param")
        _run()
        if _s[1]:
            return STAT_GOT_IP
        r = _s[2]
        if r in (201, 210, 211, 212):
            return r
        if r in (202, 205):  # AUTH_FAIL, CONNECTION_FAIL
            return 202
        if r == 8:
            return STAT_IDLE
        if _s[0] and (_s[3] == 0 or _s[4] < _s[3]):
            return STAT_CONNECTING
        if r == 0:
            return STAT_IDLE
        return r

    def isconnected(self):
        _run()
        return _s[1]

    def ifconfig(self, *args):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def config(self, *args, **kwargs):
        if "reconnects" in kwargs:
            r = kwargs["reconnects"]
            _s[3] = 0 if r == -1 else r + 1  # network_wlan.c: -1 retries for ever
            return None
        if args and args[0] == "mac":
            import machine

            return machine.unique_id()
        if args and args[0] == "reconnects":
            return _s[3] - 1
        return None
