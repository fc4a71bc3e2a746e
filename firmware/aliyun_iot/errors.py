# One small exception hierarchy. Every error carries a short code and says
# whether trying again can help: callers never retry what cannot succeed.


class IotError(Exception):
    code = "error"
    retry = False

    def __init__(self, msg, code=None, retry=None):
        super().__init__(msg)
        self.msg = msg
        if code is not None:
            self.code = code
        if retry is not None:
            self.retry = retry


class ConfigError(IotError):
    code = "config"


class NetworkError(IotError):
    code = "network"
    retry = True


class Timeout(NetworkError):
    code = "timeout"


class TlsError(IotError):
    # Verification failures are fatal: a retry meets the same certificate.
    code = "tls"


class BadReply(IotError):
    # The platform's answer broke the protocol. A later attempt is a fresh
    # registration, so a retry may help; the attempt budget bounds it.
    code = "bad_reply"
    retry = True


class StorageError(IotError):
    code = "storage"


_CAUSES = {
    1: "protocol version refused",
    2: "identifier rejected: bad clientId parameters, or registration tried over plain TCP",
    3: "server unavailable (overloaded or rate-limited); retrying later",
    4: "bad username or password: wrong ProductSecret, device not added in the console, dynamic registration"
    " disabled for the product, or device already activated (reset it with ResetThing in the console)",
    5: "not authorised",
}


class Refused(IotError):
    def __init__(self, rc, what="connection"):
        super().__init__(
            "%s refused, CONNACK %d: %s" % (what, rc, _CAUSES.get(rc, "unknown code")),
            "connack%d" % rc,
            rc == 3,
        )
        self.rc = rc
