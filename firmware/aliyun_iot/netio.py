# Deadlines on every socket wait, and one place that turns socket, TLS and
# DNS failures into the package's errors.
import errno
import time

from micropython import const

from aliyun_iot.errors import IotError, NetworkError, Timeout, TlsError

_CHUNK = const(32)
# Timeout errno values: this port's, plus the ESP32's (newlib) and Linux's.
_TIMEOUT = (errno.ETIMEDOUT, errno.EAGAIN, 11, 110, 116)
# mbedTLS codes meaning "the peer does not speak TLS as expected": a retry meets the same peer.
_TLS_FATAL = (-0x7200, -0x7300, -0x7700, -0x6E80, -0x7780, -0x7080, -0x6C00)


def nodelay(sock, mod):
    """Turn Nagle off: umqtt writes one packet in several small writes, and with Nagle on each one after
    the first waits for the peer's ACK: a round trip lost per packet. (lwIP and Linux share the numbers.)"""
    try:
        sock.setsockopt(getattr(mod, "IPPROTO_TCP", 6), getattr(mod, "TCP_NODELAY", 1), 1)
    except (OSError, AttributeError):
        pass  # a port without it still works, one round trip slower


def classify(e, what):
    """The package error for exception e raised while doing `what`."""
    if isinstance(e, IotError):
        return e
    if isinstance(e, ValueError):
        # MicroPython's ssl reports a certificate that fails verification so.
        return TlsError("%s: TLS certificate verification failed: %s" % (what, str(e).strip()), "tls_verify")
    if isinstance(e, OSError):
        code = e.args[0] if e.args else None
        if code in _TIMEOUT:
            return Timeout("%s: timed out" % what)
        if code in _TLS_FATAL:
            return TlsError("%s: the server does not speak TLS as expected (%s)" % (what, e), "tls_protocol")
        if code == -0x7280:
            return NetworkError(
                "%s: the server closed the connection during the TLS handshake (a cut, or a port that is not"
                " TLS)" % what,
                "tls_eof",
            )
        if isinstance(code, int) and code < -0x1000:
            return NetworkError("%s: TLS handshake failed (mbedTLS -0x%04x)" % (what, -code), "tls_handshake")
        return NetworkError("%s: %s" % (what, e))
    return None


class Deadline:
    """A connected socket whose every read and write ends within timeout_ms.

    umqtt.simple calls setblocking(True) inside wait_msg(), which would block
    for ever; here it restores the deadline instead. Reads larger than
    max_read are refused before anything is allocated for them.
    """

    def __init__(self, sock, timeout_ms, max_read, raw=None):
        self.sock = sock
        # MicroPython's TLS socket has no settimeout(): the socket under it carries the timeout.
        self._timer = sock if hasattr(sock, "settimeout") else raw
        self.timeout_ms = timeout_ms
        self.max_read = max_read
        self._block = True
        self._timer.settimeout(timeout_ms / 1000)

    def setblocking(self, flag):
        self._block = flag
        self._timer.settimeout(self.timeout_ms / 1000 if flag else 0)

    def settimeout(self, t):
        self._block = t != 0
        self._timer.settimeout(self.timeout_ms / 1000 if t is None else t)

    def read(self, n):
        """Up to n bytes: fewer only at end of stream."""
        if n > self.max_read:
            from aliyun_iot.errors import BadReply

            raise BadReply("peer announced %d bytes; at most %d are accepted" % (n, self.max_read))
        if not self._block:
            return self.sock.read(n)
        limit = self.timeout_ms
        t0 = time.ticks_ms()
        out = b""
        while len(out) < n:
            left = limit - time.ticks_diff(time.ticks_ms(), t0)
            if left <= 0:
                raise Timeout("read timed out after %d ms" % limit)
            self._timer.settimeout(left / 1000)
            try:
                chunk = self.sock.read(min(n - len(out), _CHUNK))
            except OSError as e:
                raise classify(e, "read")
            if not chunk:
                break
            out += chunk
        return out

    def poll(self, wait_ms):
        """One byte if it arrives within wait_ms (0: only if already here), else None."""
        self._timer.settimeout(wait_ms / 1000)
        try:
            b = self.sock.read(1)
        except OSError as e:
            err = classify(e, "read")
            if isinstance(err, Timeout):
                return None
            raise err
        if b is None:
            return None
        if not b:
            raise NetworkError("connection closed by the server", "closed")
        return b

    def write(self, buf, n=None):
        if n is not None:
            buf = memoryview(buf)[:n]
        self._timer.settimeout(self.timeout_ms / 1000)
        try:
            return self.sock.write(buf)
        except OSError as e:
            raise classify(e, "write")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
