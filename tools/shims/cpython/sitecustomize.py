# CPython only: give CPython the MicroPython APIs the firmware uses, so that the
# very same firmware files run on the host. CPython imports `sitecustomize`
# automatically when this directory is on PYTHONPATH (the harness puts it there
# for CPython runs only; the unix port and the boards never see it).
#
# What changes, and why:
# - time: ticks_ms/ticks_us/ticks_cpu/ticks_add/ticks_diff/sleep_ms/sleep_us.
# - socket: replaced by a module with the ESP32 port's names only, whose
#   socket objects have MicroPython's stream methods read/readinto/readline/write
#   and raise OSError(ETIMEDOUT) on a timeout, as MicroPython does.
# - ssl (and its MicroPython alias `tls`): replaced by MicroPython's API:
#   SSLContext(protocol) that starts with CERT_NONE, load_verify_locations that
#   takes DER (only the FIRST certificate of concatenated DER is loaded, exactly
#   as mbedTLS does on a board) or PEM (ESP32 builds parse PEM; the unix port
#   build in .venv rejects it: firmware should pass DER), wrap_socket returning a socket with
#   MicroPython stream semantics, module-level wrap_socket with MicroPython's
#   signature, and MicroPython's exceptions: ValueError for a certificate that
#   fails verification, OSError(-<mbedtls code>, "MBEDTLS_ERR_...") for other
#   handshake failures. CPython-only names (SSLError, create_default_context,
#   socket.timeout, ...) are absent, so firmware that uses them fails here too.
# - the TLS socket keeps its first failure, as MicroPython's does: after a read
#   that timed out (or any error but would-block) every read and write fails
#   with that error again, and poll() reports POLLNVAL for it.
# - the board's error shapes (extmod/modtls_mbedtls.c, py/stream.c at v1.23.0..v1.28.0), read from the
#   environment at each call so a test can set them for one run:
#   SHIM_TLS_NOMEM=12|16[:n]  the next n (default: every) handshakes fail out of memory, as a board's do:
#     SSL_ALLOC_FAILED is raised as OSError(12) (MP_ENOMEM), MPI_ALLOC_FAILED (-0x10) as OSError(16)
#     (mbedtls_raise_error turns -255..-1 positive).
#   SHIM_TLS_ERRNO=negative   1.23-1.27: a read or write error through TLS is raised as socket_read/write
#     store it, without mbedtls_raise_error: OSError(-110) for a timeout, OSError(-0x7280) without text.
#     Unset: 1.28 and later (MICROPY_STREAMS_DELEGATE_ERROR), positive errno, mbedTLS codes with text.
#   A FIN without close_notify after the handshake reads as the end of the stream on a board too
#   (mbedtls_ssl_read returns 0 on MBEDTLS_ERR_SSL_CONN_EOF: library/ssl_msg.c, mbedTLS 3.x as in ESP-IDF
#   5.x; checked on the unix port, mbedTLS 3.6.6), as CPython's ssl does;
#   in the handshake it is OSError(-0x7280) on both.
# - select: poll() objects with MicroPython's semantics: they take socket and
#   TLS objects (a TLS object is readable when it holds decrypted bytes, as
#   mbedtls_ssl_check_pending makes it on a board) and return (obj, event) pairs.
# - sys.print_exception(e[, file]).
# - json.dumps/json.dump write non-ASCII characters raw (as UTF-8 once encoded), as
#   MicroPython's do (py/objstr.c@v1.28.0 mp_str_print_json copies every byte >= 32
#   unchanged), where CPython's default escapes them (\uXXXX): a str with Chinese text
#   has more UTF-8 bytes than characters on both runtimes.
# - sys.path: site-packages entries are removed (a board has no host packages).
# Nothing else is touched: the stdlib's own `ssl`/`socket` objects stay intact
# for whatever already imported them.
import errno as _errno
import os as _os
import select as _real_select
import socket as _real_socket
import ssl as _real_ssl
import sys as _sys
import time as _time
import types as _types

_TICKS_PERIOD = 1 << 30  # the ESP32 port's ticks wrap at 2**30
_TICKS_MAX = _TICKS_PERIOD - 1
_TICKS_HALF = _TICKS_PERIOD // 2
_T0 = _time.monotonic_ns()  # ticks count from "boot", i.e. interpreter start

_EAGAIN_ERRORS = (BlockingIOError, _real_ssl.SSLWantReadError, _real_ssl.SSLWantWriteError)

# mbedTLS error codes MicroPython reports as OSError(code, name)
_MBEDTLS_CONN_EOF = (-0x7280, "MBEDTLS_ERR_SSL_CONN_EOF")
_MBEDTLS_INVALID_RECORD = (-0x7200, "MBEDTLS_ERR_SSL_INVALID_RECORD")
_MBEDTLS_FATAL_ALERT = (-0x7780, "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE")
_MBEDTLS_BAD_INPUT = "invalid cert"

# OpenSSL verify codes -> the text MicroPython's ValueError carries
_VERIFY_TEXT = {
    62: "The certificate Common Name (CN) does not match with the expected CN",
    10: "The certificate validity has expired",
    9: "The certificate validity starts in the future",
}
_VERIFY_DEFAULT = "The certificate is not correctly signed by the trusted CA"


# ---------------------------------------------------------------- time


def _ticks_ms():
    return ((_time.monotonic_ns() - _T0) // 1000000) & _TICKS_MAX


def _ticks_us():
    return ((_time.monotonic_ns() - _T0) // 1000) & _TICKS_MAX


def _ticks_add(ticks, delta):
    return (ticks + delta) & _TICKS_MAX


def _ticks_diff(end, start):
    return ((end - start + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF


def _sleep_ms(ms):
    if ms > 0:
        _time.sleep(ms / 1000)


def _sleep_us(us):
    if us > 0:
        _time.sleep(us / 1000000)


def _install_time():
    _time.ticks_ms = _ticks_ms
    _time.ticks_us = _ticks_us
    _time.ticks_cpu = _ticks_us
    _time.ticks_add = _ticks_add
    _time.ticks_diff = _ticks_diff
    _time.sleep_ms = _sleep_ms
    _time.sleep_us = _sleep_us


# ---------------------------------------------------------------- streams
# Shared by plain and TLS sockets: `recv`/`send` are the raw calls of the
# underlying CPython object.


def _timeout():
    # MicroPython reports a socket timeout as OSError(ETIMEDOUT), args == (110,)
    return OSError(_errno.ETIMEDOUT)


def _stream_read(recv, n):
    # MicroPython read(n): block until n bytes or EOF; non-blocking with no data
    # -> None; data read before a would-block is returned; a timeout discards
    # what was read and raises.
    buf = bytearray()
    while n is None or n < 0 or len(buf) < n:
        want = 4096 if n is None or n < 0 else n - len(buf)
        try:
            chunk = recv(want)
        except _EAGAIN_ERRORS:
            if buf:
                break
            return None
        except TimeoutError:
            raise _timeout() from None
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _stream_readinto(recv, buf, nbytes):
    mv = memoryview(buf).cast("B")
    if nbytes is not None:
        mv = mv[:nbytes]
    got = 0
    while got < len(mv):
        try:
            chunk = recv(len(mv) - got)
        except _EAGAIN_ERRORS:
            if got:
                break
            return None
        except TimeoutError:
            raise _timeout() from None
        if not chunk:
            break
        mv[got : got + len(chunk)] = chunk
        got += len(chunk)
    return got


def _stream_readline(recv):
    line = bytearray()
    while True:
        try:
            c = recv(1)
        except _EAGAIN_ERRORS:
            if line:
                break
            return None
        except TimeoutError:
            raise _timeout() from None
        if not c:
            break
        line += c
        if c == b"\n":
            break
    return bytes(line)


def _stream_write(send, buf, args):
    # MicroPython write(buf), write(buf, max_len), write(buf, off, max_len);
    # a str is written as its UTF-8 bytes.
    if isinstance(buf, str):
        buf = buf.encode()
    mv = memoryview(buf).cast("B")
    if len(args) == 1:
        mv = mv[: args[0]]
    elif len(args) == 2:
        mv = mv[args[0] : args[0] + args[1]]
    elif args:
        raise TypeError("write() takes at most 3 arguments")
    sent = 0
    while sent < len(mv):
        try:
            sent += send(mv[sent:])
        except _EAGAIN_ERRORS:
            if sent:
                break
            return None
        except TimeoutError:
            raise _timeout() from None
    return sent


# ---------------------------------------------------------------- socket


class _Stream:
    """MicroPython's stream methods over the subclass's _mp_recv/_mp_send."""

    def read(self, n=-1):
        return _stream_read(self._mp_recv, n)

    def readinto(self, buf, nbytes=None):
        return _stream_readinto(self._mp_recv, buf, nbytes)

    def readline(self):
        return _stream_readline(self._mp_recv)

    def write(self, buf, *args):
        return _stream_write(self._mp_send, buf, args)


class _MPSocket(_Stream, _real_socket.socket):
    """A CPython socket with MicroPython's stream methods."""

    def __init__(self, af=_real_socket.AF_INET, type=_real_socket.SOCK_STREAM, proto=0, fileno=None):
        super().__init__(af, type, proto, fileno)

    # MicroPython's stream methods run on the plain socket calls.
    _mp_recv = _real_socket.socket.recv
    _mp_send = _real_socket.socket.send

    def accept(self):
        fd, addr = self._accept()
        return _MPSocket(self.family, self.type, self.proto, fileno=fd), addr


def _getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    # The ESP32 has IPv4 only; CPython would put ::1 first for "localhost".
    return _real_socket.getaddrinfo(host, port, af or _real_socket.AF_INET, type, proto, flags)


_SOCKET_NAMES = (
    "AF_INET SOCK_STREAM SOCK_DGRAM SOCK_RAW SOL_SOCKET SO_REUSEADDR SO_BROADCAST MSG_PEEK "
    "MSG_DONTWAIT IPPROTO_IP IPPROTO_TCP IPPROTO_UDP TCP_NODELAY IP_ADD_MEMBERSHIP"
).split()


def _make_socket_module():
    mod = _types.ModuleType("socket", "MicroPython-flavoured socket (CPython host shim)")
    for name in _SOCKET_NAMES:
        setattr(mod, name, getattr(_real_socket, name))
    mod.socket = _MPSocket
    mod.getaddrinfo = _getaddrinfo
    return mod


# ---------------------------------------------------------------- ssl


def _handshake_error(e):
    """Translate a CPython TLS failure into what MicroPython raises."""
    if isinstance(e, _real_ssl.SSLCertVerificationError):
        text = _VERIFY_TEXT.get(getattr(e, "verify_code", None), _VERIFY_DEFAULT)
        return ValueError("\n" + text + "\n")
    if isinstance(e, TimeoutError):
        return _timeout()
    if isinstance(e, (_real_ssl.SSLEOFError, _real_ssl.SSLZeroReturnError, ConnectionResetError)):
        return OSError(*_MBEDTLS_CONN_EOF)
    if isinstance(e, _real_ssl.SSLError):
        reason = (getattr(e, "reason", None) or "").upper()
        if "ALERT" in reason:
            return OSError(*_MBEDTLS_FATAL_ALERT)
        if "EOF" in reason:
            return OSError(*_MBEDTLS_CONN_EOF)
        return OSError(*_MBEDTLS_INVALID_RECORD)
    return e


def _first_der(data):
    # mbedTLS parses exactly one certificate from DER input and ignores the
    # rest, so a concatenated DER bundle trusts only its first root on a board.
    data = bytes(data)
    if len(data) < 4 or data[0] != 0x30:
        raise ValueError(_MBEDTLS_BAD_INPUT)
    n = data[1]
    if n < 0x80:
        end = 2 + n
    else:
        k = n & 0x7F
        if k == 0 or k > 4 or len(data) < 2 + k:
            raise ValueError(_MBEDTLS_BAD_INPUT)
        end = 2 + k + int.from_bytes(data[2 : 2 + k], "big")
    if end > len(data):
        raise ValueError(_MBEDTLS_BAD_INPUT)
    return data[:end]


_nomem_used = 0


def _nomem():
    """OSError(12/16) for this handshake when SHIM_TLS_NOMEM asks for it (see the header)."""
    global _nomem_used
    spec = _os.environ.get("SHIM_TLS_NOMEM")
    if not spec:
        return None
    code, _, n = spec.partition(":")
    if n and _nomem_used >= int(n):
        return None
    _nomem_used += 1
    return OSError(int(code))


def _io_shape(err):
    # py/stream.c@v1.27.0 raises socket_read/socket_write's errcode as it is: a socket errno negated by
    # _mbedtls_ssl_recv/_send, an mbedTLS code without text. v1.28.0 passes it to mbedtls_raise_error.
    if _os.environ.get("SHIM_TLS_ERRNO") != "negative" or not isinstance(err, OSError) or not err.args:
        return err
    c = err.args[0]
    return OSError(-c if 0 < c < 256 else c)


class _TLSSocket(_Stream):
    """What MicroPython's SSLContext.wrap_socket returns: a stream, not a socket."""

    def __init__(self, sslsock):
        self._s = sslsock
        self._err = None  # modtls_mbedtls.c's last_error: the first failure, kept for good

    def _io(self, fn, arg):
        # TLS failures surface as MicroPython's OSError(-mbedtls code); would-block passes through.
        if self._err is not None:
            raise OSError(*self._err)
        try:
            return fn(arg)
        except _EAGAIN_ERRORS:
            raise
        except TimeoutError:
            err = _timeout()
        except (_real_ssl.SSLError, OSError) as e:
            err = _handshake_error(e)
        err = _io_shape(err)
        if isinstance(err, OSError):
            self._err = err.args
        raise err from None

    def _mp_recv(self, n):
        return self._io(self._s.recv, n)

    def _mp_send(self, buf):
        return self._io(self._s.send, buf)

    def recv(self, n):
        return self._mp_recv(n)

    def send(self, buf):
        return self._mp_send(buf)

    def sendall(self, buf):
        self.write(buf)

    def setblocking(self, flag):
        self._s.setblocking(flag)

    def settimeout(self, value):
        self._s.settimeout(value)

    def fileno(self):
        return self._s.fileno()

    def getpeercert(self, binary_form=False):
        # MicroPython returns the peer's DER certificate
        return self._s.getpeercert(True)

    def cipher(self):
        return self._s.cipher()

    def close(self):
        self._s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SSLContext:
    """MicroPython's tls.SSLContext on top of CPython's ssl.SSLContext."""

    def __init__(self, protocol):
        self._server = protocol == _real_ssl.PROTOCOL_TLS_SERVER
        self._ctx = _real_ssl.SSLContext(protocol)
        # MicroPython starts with CERT_NONE, also for clients: firmware must set
        # CERT_REQUIRED itself, and this shim must not hide it when it forgets.
        self._ctx.check_hostname = False
        self._ctx.verify_mode = _real_ssl.CERT_NONE

    @property
    def verify_mode(self):
        return int(self._ctx.verify_mode)

    @verify_mode.setter
    def verify_mode(self, mode):
        self._ctx.verify_mode = mode

    def load_verify_locations(self, cafile=None, cadata=None):
        if cafile:
            with open(cafile, "rb") as f:
                cadata = f.read()
        if cadata is None:
            raise ValueError(_MBEDTLS_BAD_INPUT)
        if isinstance(cadata, str):
            cadata = cadata.encode()
        cadata = bytes(cadata)
        try:
            if b"-----BEGIN" in cadata:
                self._ctx.load_verify_locations(cadata=cadata.decode("ascii"))
            else:
                self._ctx.load_verify_locations(cadata=_first_der(cadata))
        except _real_ssl.SSLError:
            raise ValueError(_MBEDTLS_BAD_INPUT) from None

    def load_cert_chain(self, certfile, keyfile):
        # MicroPython accepts file paths or the DER/PEM data itself; CPython
        # wants PEM files, so data goes through temporary files.
        import tempfile

        paths = []
        try:
            for item in (certfile, keyfile):
                if isinstance(item, str):
                    paths.append(item)
                    continue
                data = bytes(item)
                if b"-----BEGIN" not in data:
                    raise ValueError("host shim: load_cert_chain needs PEM data or a path")
                fd, p = tempfile.mkstemp(suffix=".pem")
                with _os.fdopen(fd, "wb") as f:
                    f.write(data)
                paths.append(p)
            self._ctx.load_cert_chain(paths[0], paths[1])
        finally:
            for item, p in zip((certfile, keyfile), paths, strict=False):
                if not isinstance(item, str):
                    _os.unlink(p)

    def set_ciphers(self, ciphers):
        pass

    def get_ciphers(self):
        return [c["name"] for c in self._ctx.get_ciphers()]

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, server_hostname=None):
        # mbedTLS checks the name only when it verifies the chain.
        verifying = self._ctx.verify_mode != _real_ssl.CERT_NONE
        err = _nomem()
        if err is not None:
            raise err
        self._ctx.check_hostname = bool(verifying and server_hostname and not server_side)
        try:
            s = self._ctx.wrap_socket(
                sock,
                server_side=server_side,
                do_handshake_on_connect=do_handshake_on_connect,
                server_hostname=server_hostname,
            )
        except (_real_ssl.SSLError, OSError) as e:
            raise _handshake_error(e) from None
        return _TLSSocket(s)


def wrap_socket(
    sock,
    server_side=False,
    key=None,
    cert=None,
    cert_reqs=_real_ssl.CERT_NONE,
    cadata=None,
    server_hostname=None,
    do_handshake=True,
):
    """MicroPython's module-level ssl.wrap_socket (what umqtt.simple 1.3.4 calls)."""
    ctx = SSLContext(_real_ssl.PROTOCOL_TLS_SERVER if server_side else _real_ssl.PROTOCOL_TLS_CLIENT)
    if cert or key:
        ctx.load_cert_chain(cert, key)
    if cadata:
        ctx.load_verify_locations(cadata=cadata)
    ctx.verify_mode = cert_reqs
    return ctx.wrap_socket(
        sock, server_side=server_side, do_handshake_on_connect=do_handshake, server_hostname=server_hostname
    )


# ---------------------------------------------------------------- select

_POLLNVAL = 0x20


class _Poll:
    """MicroPython's select.poll(): registered objects, (obj, event) results, TLS-pending aware."""

    def __init__(self):
        self._objs = {}

    def register(self, obj, mask=_real_select.POLLIN | _real_select.POLLOUT):
        self._objs[id(obj)] = (obj, mask)

    def modify(self, obj, mask):
        if id(obj) not in self._objs:
            raise OSError(_errno.ENOENT)
        self._objs[id(obj)] = (obj, mask)

    def unregister(self, obj):
        self._objs.pop(id(obj), None)

    def poll(self, timeout=-1):
        ready = []
        waiting = _real_select.poll()
        fds = {}
        for obj, mask in self._objs.values():
            if isinstance(obj, _TLSSocket):
                if obj._err is not None or obj._s.fileno() < 0:
                    ready.append((obj, _POLLNVAL))
                    continue
                if mask & _real_select.POLLIN and obj._s.pending():
                    ready.append((obj, _real_select.POLLIN))
                    continue
            fd = obj.fileno()
            if fd < 0:
                ready.append((obj, _POLLNVAL))
                continue
            fds[fd] = obj
            waiting.register(fd, mask)
        if ready:
            timeout = 0
        if fds:
            for fd, ev in waiting.poll(None if timeout is None or timeout < 0 else timeout):
                ready.append((fds[fd], ev))
        elif not ready and timeout is not None and timeout > 0:
            _time.sleep(timeout / 1000)
        return ready


def _make_select_module():
    mod = _types.ModuleType("select", "MicroPython-flavoured select (CPython host shim)")
    for name in ("POLLIN", "POLLOUT", "POLLERR", "POLLHUP"):
        setattr(mod, name, getattr(_real_select, name))
    mod.poll = _Poll
    return mod


def _print_exception(e, file=None):
    import traceback

    traceback.print_exception(type(e), e, e.__traceback__, file=file or _sys.stdout)


def _make_ssl_module(name, with_wrap_socket):
    mod = _types.ModuleType(name, "MicroPython-flavoured %s (CPython host shim)" % name)
    mod.SSLContext = SSLContext
    mod.CERT_NONE = int(_real_ssl.CERT_NONE)
    mod.CERT_OPTIONAL = int(_real_ssl.CERT_OPTIONAL)
    mod.CERT_REQUIRED = int(_real_ssl.CERT_REQUIRED)
    mod.PROTOCOL_TLS_CLIENT = int(_real_ssl.PROTOCOL_TLS_CLIENT)
    mod.PROTOCOL_TLS_SERVER = int(_real_ssl.PROTOCOL_TLS_SERVER)
    mod.MBEDTLS_VERSION = "CPython " + _real_ssl.OPENSSL_VERSION
    if with_wrap_socket:
        mod.wrap_socket = wrap_socket
    return mod


def _install_json():
    import json

    dumps, dump = json.dumps, json.dump

    def _dumps(obj, *args, ensure_ascii=False, **kw):
        return dumps(obj, *args, ensure_ascii=ensure_ascii, **kw)

    def _dump(obj, fp, *args, ensure_ascii=False, **kw):
        return dump(obj, fp, *args, ensure_ascii=ensure_ascii, **kw)

    json.dumps, json.dump = _dumps, _dump


def _install():
    if _sys.implementation.name != "cpython":
        return
    _install_json()
    _install_time()
    _sys.modules["socket"] = _make_socket_module()
    _sys.modules["ssl"] = _make_ssl_module("ssl", True)
    _sys.modules["tls"] = _make_ssl_module("tls", False)
    _sys.modules["select"] = _make_select_module()
    _sys.print_exception = _print_exception
    # A board has no host packages: the firmware must not import any by accident.
    _sys.path[:] = [p for p in _sys.path if not p.endswith(("site-packages", "dist-packages"))]


_install()
