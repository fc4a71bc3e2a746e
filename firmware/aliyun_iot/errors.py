# One small exception hierarchy. Every error carries a short code and says
# whether trying again can help: callers never retry what cannot succeed.
# Messages stay short on the device; what a code means and what to do is in
# aliyun_iot/explain.py (imported only when a failure is reported) and the
# README's troubleshooting table.


class IotError(Exception):
    code = "error"
    retry = False

    def __init__(self, msg, code=None, retry=None):
        super().__init__(msg)
        self.msg = msg
        if code:
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
    # The platform's answer broke the protocol; the next attempt is a fresh one.
    code = "bad_reply"
    retry = True


class StorageError(IotError):
    code = "storage"


class Refused(IotError):
    def __init__(self, rc, what="connection"):
        super().__init__("%s refused, CONNACK %d" % (what, rc), "connack%d" % rc, rc == 3)
        self.rc = rc
