# Deadlines on every socket wait, and one place that turns socket, TLS and
# DNS failures into the package's errors.
#
# MicroPython's TLS socket keeps the first error its socket gives it: a read
# that times out *through TLS* leaves it failed for good. So nothing here ever
# waits in a timed TLS read: reads are non-blocking and wait in select.poll,
# which also sees bytes TLS has already decrypted and holds.
import errno
import select
import time

from micropython import const

from aliyun_iot.errors import BadReply, IotError, NetworkError, Timeout, TlsError

_POLLIN = const(1)
_DEAD = const(0x38)  # POLLERR | POLLHUP | POLLNVAL (MicroPython's TLS: NVAL once it has failed)
# Timeout errno values: this port's, plus the ESP32's (newlib) and Linux's.
_TIMEOUT = (errno.ETIMEDOUT, errno.EAGAIN, 11, 110, 116)
# mbedTLS codes meaning "the peer does not speak TLS as expected": a retry meets the same peer.
_TLS_FATAL = (-0x7200, -0x7300, -0x7700, -0x6E80, -0x7780, -0x7080, -0x6C00)
# mbedTLS out of memory: SSL_ALLOC_FAILED, MPI_ALLOC_FAILED (the bignum one ESP32 users meet).
_TLS_NOMEM = (-0x7F00, -0x0010)


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
        if code in _TLS_NOMEM:
            return NetworkError("%s: TLS out of memory (see README: RAM)" % what, "tls_nomem")
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
    """A connected (TLS) socket whose every read and write ends within timeout_ms.

    Reads never block in the socket: they poll for the time left, then read
    what is there. Reads larger than max_read are refused before anything is
    allocated for them.
    """

    def __init__(self, sock, timeout_ms, max_read, raw=None):
        self.sock = sock
        # MicroPython's TLS socket has no settimeout(): the socket under it carries the timeout.
        self._timer = sock if hasattr(sock, "settimeout") else raw
        self.timeout_ms = timeout_ms
        self.max_read = max_read
        self._poll = select.poll()
        self._poll.register(sock, _POLLIN)

    def setblocking(self, flag):
        pass  # umqtt's wait_msg() asks for blocking reads; ours always have a deadline

    def wait(self, ms):
        """True when a read would find data (or end of stream) within ms; a dead socket raises."""
        ev = self._poll.poll(ms if ms > 0 else 0)
        if not ev:
            return False
        if ev[0][1] & _DEAD:
            raise NetworkError("connection closed", "closed")
        return True

    def readinto(self, buf, n=None):
        """Fill buf[:n] within the deadline. Returns the count: fewer only at end of stream."""
        mv = memoryview(buf)
        n = len(buf) if n is None else n
        got = 0
        t0 = time.ticks_ms()
        self._timer.settimeout(0)
        while got < n:
            try:
                k = self.sock.readinto(mv[got:n])
            except OSError as e:
                raise classify(e, "read")
            if k is None:  # nothing decrypted yet: wait for the rest within the deadline
                left = self.timeout_ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    raise Timeout("read timed out after %d ms" % self.timeout_ms)
                self.wait(left)
                continue
            if not k:
                break
            got += k
        return got

    def read(self, n):
        """n bytes (fewer only at end of stream)."""
        if n > self.max_read:
            raise BadReply("peer announced %d bytes; at most %d are accepted" % (n, self.max_read))
        buf = bytearray(n)
        k = self.readinto(buf)
        return buf if k == n else buf[:k]

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
            self._poll.unregister(self.sock)
        except (OSError, KeyError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
