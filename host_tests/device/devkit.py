# Helpers for device scripts: scripts that run unchanged on CPython (with the
# shims) and on the MicroPython unix port, and report one line per check:
#   OK <name>            FAIL <name>: <why>            SKIP <reason>
# The pytest side (host_tests.plugins.runtimes.assert_device_ok) reads them.
import sys


def runtime():
    return sys.implementation.name  # "cpython" or "micropython"


def ok(name):
    print("OK " + name)


def fail(name, why):
    print("FAIL %s: %s" % (name, why))


def info(text):
    print("INFO " + text)


def skip(reason):
    print("SKIP " + reason)
    sys.exit(0)


def check(name, cond, why="check failed"):
    if cond:
        ok(name)
    else:
        fail(name, why)
    return cond


def equal(name, got, want):
    return check(name, got == want, "got %r, want %r" % (got, want))


def raises(name, exc_type, fn, *args, **kwargs):
    """Call fn; OK when it raises exc_type (returned), FAIL otherwise."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        ok(name)
        return e
    except Exception as e:  # noqa: BLE001 - any other exception is the failure being reported
        fail(name, "raised %s %r, want %s" % (type(e).__name__, e.args, exc_type.__name__))
        return None
    fail(name, "no exception, want %s" % exc_type.__name__)
    return None


def require_lfs2():
    """The vfs module when it has VfsLfs2 (to mount littlefs on a RAM block device), else SKIP."""
    try:
        import vfs
    except ImportError:
        vfs = None
    if vfs is None or not hasattr(vfs, "VfsLfs2"):
        skip("needs vfs.VfsLfs2 on a RAM block device: MicroPython unix port only")
    return vfs


def arg(i, default=None):
    return sys.argv[i] if len(sys.argv) > i else default


def load_json(path):
    import json

    with open(path) as f:
        return json.load(f)
