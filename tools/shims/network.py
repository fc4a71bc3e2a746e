# Host stand-in for the ESP32 `network` module (station interface only).
#   VBOARD_WIFI           "ssid:password[,ssid2:password2]" networks in range;
#                         unset means any SSID joins with any password
#   VBOARD_WIFI_DELAY_MS  time a join takes (default 30)
import os
import time

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_CONNECT_FAIL = 203


def _env(name):
    try:
        return os.getenv(name)
    except AttributeError:
        return None


def _ms():
    return int(time.time() * 1000)


class WLAN:
    def __init__(self, interface=STA_IF):
        self._if = interface
        self._active = False
        self._status = STAT_IDLE
        self._ready_at = None

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self.disconnect()

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        nets = _env("VBOARD_WIFI")
        if nets:
            known = {}
            for item in nets.split(","):
                name, _, pw = item.partition(":")
                known[name] = pw
            if ssid not in known:
                self._status = STAT_NO_AP_FOUND
                return
            if known[ssid] != (key or ""):
                self._status = STAT_WRONG_PASSWORD
                return
        self._status = STAT_CONNECTING
        self._ready_at = _ms() + int(_env("VBOARD_WIFI_DELAY_MS") or 30)

    def disconnect(self):
        self._status = STAT_IDLE
        self._ready_at = None

    def status(self, param=None):
        if param == "rssi":
            return -55
        if self._status == STAT_CONNECTING and _ms() >= self._ready_at:
            self._status = STAT_GOT_IP
        return self._status

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self, *args):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def config(self, *args, **kwargs):
        if args and args[0] == "mac":
            import machine

            return machine.unique_id()
        return None
