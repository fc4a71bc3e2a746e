"""The emulator's own CA and server certificates, minted with trustme (RSA 2048, like the real endpoints).

The CA (key + cert) is kept in the state directory and reused, so a device that stored ca.pem/ca.der
keeps trusting a restarted emulator. The server certificate is minted fresh at each start.
TLS faults: `expired` (a cert whose validity ended yesterday), `wronghost` (a cert for another name),
`unknownca` (a cert from a throwaway CA the device does not know).
"""

import datetime
import os
import ssl

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .faults import TLS_FAULTS

CA_PEM = "ca.pem"
CA_DER = "ca.der"
_CA_KEY = "ca-key.pem"
SERVER_NAMES = ("localhost", "127.0.0.1")


def _write(path, data, mode):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_or_create_ca(state_dir):
    """The persistent CA of this state directory; writes ca.pem and ca.der next to its key."""
    key_path = os.path.join(state_dir, _CA_KEY)
    pem_path = os.path.join(state_dir, CA_PEM)
    if os.path.exists(key_path) and os.path.exists(pem_path):
        with open(pem_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
        ca = trustme.CA.from_pem(cert_pem, key_pem)
    else:
        ca = trustme.CA(key_type=trustme.KeyType.RSA, organization_name="aliyun-iot emulator")
        _write(key_path, ca.private_key_pem.bytes(), 0o600)
        _write(pem_path, ca.cert_pem.bytes(), 0o644)
    der = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(Encoding.DER)
    der_path = os.path.join(state_dir, CA_DER)
    if not os.path.exists(der_path) or open(der_path, "rb").read() != der:
        _write(der_path, der, 0o644)
    return ca


def server_context(ca, tls_fault="none"):
    """SSLContext for the TLS listeners, or None for tls_fault == "plain"."""
    if tls_fault not in TLS_FAULTS:
        raise ValueError("unknown TLS fault %r (allowed: %s)" % (tls_fault, ", ".join(TLS_FAULTS)))
    if tls_fault == "plain":
        return None
    names = SERVER_NAMES
    kwargs = {}
    if tls_fault == "expired":
        now = datetime.datetime.now(datetime.timezone.utc)
        day = datetime.timedelta(days=1)
        kwargs = {"not_before": now - 30 * day, "not_after": now - day}
    elif tls_fault == "wronghost":
        names = ("wrong-host.example.com",)
    elif tls_fault == "unknownca":
        ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert(*names, key_type=trustme.KeyType.RSA, **kwargs)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_NONE  # devices do not present client certificates
    leaf.configure_cert(ctx)
    return ctx
