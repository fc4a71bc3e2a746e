# Socket, TLS and DNS failures as the package's errors. Imported only when a
# failure happens, so that the running session does not hold it.
from aliyun_iot import IotError

_TIMEOUT = (11, 110, 116)  # EAGAIN, ETIMEDOUT (Linux), ETIMEDOUT (the ESP32's newlib)
# mbedTLS codes meaning "the peer does not speak TLS as expected": a retry meets the same peer.
_TLS_FATAL = (-0x7200, -0x7300, -0x7700, -0x6E80, -0x7780, -0x7080, -0x6C00)
# Out of memory in TLS, as a board raises it (extmod/modtls_mbedtls.c, v1.23.0-v1.28.0): SSL_ALLOC_FAILED
# becomes ENOMEM (12) and MPI_ALLOC_FAILED (-0x10) turns positive, EBUSY (16); through a read or a write
# on 1.23-1.27 the raw codes -0x7F00 and -16 come out.
_TLS_NOMEM = (12, 16, -0x7F00)


def classify(e, what):
    """The package error for exception e raised while doing `what` (None: not a network failure)."""
    if isinstance(e, IotError):
        return e
    if isinstance(e, ValueError):
        # MicroPython's ssl reports a certificate that fails verification so.
        return IotError("%s: TLS certificate verification failed: %s" % (what, str(e).strip()), "tls_verify")
    if not isinstance(e, OSError):
        return None
    c = e.args[0] if e.args else 0
    if isinstance(c, int) and -256 < c < 0:
        # 1.23-1.27 raise a socket errno through TLS negated (OSError(-116): a timed-out read or write);
        # 1.28 raises it through mbedtls_raise_error, which makes -255..-1 positive (modtls_mbedtls.c).
        c = -c
    if c in _TIMEOUT:
        return IotError(what + ": timed out", "timeout", True)
    if c in _TLS_FATAL:
        return IotError("%s: the server does not speak TLS as expected (%s)" % (what, e), "tls_protocol")
    if c in _TLS_NOMEM:
        return IotError(what + ": TLS out of memory", "tls_nomem", True)
    if c == -0x7280:
        # MBEDTLS_ERR_SSL_CONN_EOF reaches Python only from the handshake: after it, mbedtls_ssl_read turns
        # a FIN without close_notify into 0, the end of the stream (library/ssl_msg.c), as CPython's ssl does.
        return IotError(what + ": closed in the TLS handshake (a cut, or not a TLS port)", "tls_eof", True)
    if isinstance(c, int) and c < -0x1000:
        return IotError("%s: TLS handshake failed (mbedTLS -0x%04x)" % (what, -c), "tls_handshake", True)
    return IotError("%s: %s" % (what, e), "network", True)


def connecting(e, what):
    """classify(), for an exception out of umqtt.simple's connect(): a CONNACK refusal is connack<rc>."""
    from umqtt.simple import MQTTException

    if isinstance(e, MQTTException):
        rc = e.args[0] if e.args else -1
        return IotError("%s refused, CONNACK %d" % (what, rc), "connack%d" % rc, rc == 3)
    if isinstance(e, (IndexError, AssertionError)):  # umqtt indexes or asserts on a bad CONNACK
        return IotError(what + ": closed before a valid CONNACK", "closed", True)
    return classify(e, what)
