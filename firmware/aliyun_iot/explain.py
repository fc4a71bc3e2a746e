# What an error code means and what to do about it: printed under a fatal
# error. Imported only when a failure is reported, so it costs no RAM before
# (and, frozen, none at all). The README's troubleshooting table says the same.
_HINTS = {
    "connack1": "protocol version refused: is this an Alibaba IoT endpoint?",
    "connack2": "identifier rejected: bad clientId parameters (instance_id?), or registration over plain TCP",
    "connack3": "server unavailable (overloaded or rate-limited): retried later",
    "connack4": "bad username or password: wrong ProductSecret, device not added in the console, dynamic"
    " registration disabled for the product, or device already activated (it lost its secret: reset it"
    " with ResetThing in the console)",
    "connack5": "not authorised",
    "activated": "the device is already activated: ResetThing in the console, then reboot",
    "config_missing": "no config.json on the board: make provision",
    "config": "fix the key the message names (README: Config keys)",
    "wifi_auth": "wrong wifi_password",
    "wifi_noap": "wifi_ssid not in range",
    "ntp": "NTP unreachable, and TLS needs the date: open UDP 123, or set the RTC and ntp: false",
    "dns": "the endpoint's name does not resolve: check region, instance_id, host",
    "tls_verify": "certificate not trusted: wrong ca or host, or the clock is wrong",
    "tls_protocol": "the server does not speak TLS on that port (8883 is TLS)",
    "tls_eof": "the connection was cut in the TLS handshake, or the port is not TLS",
    "tls_nomem": "TLS ran out of RAM: freeze the package, keep fewer modules in /lib",
    "corrupt": "the credential file is damaged and kept as it is: make restore, or ResetThing and delete it",
    "full": "the flash is full: the credential was not written",
    "mismatch": "the stored credential is another device's: re-provision deliberately",
}


def hint(code):
    """The explanation of an error code, or None."""
    return _HINTS.get(code)
