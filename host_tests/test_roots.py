"""The built-in roots (firmware/aliyun_iot/roots.py): the bytes shipped, their lifetime, and handshakes.

Fingerprints and expiry dates from the platform's published roots (the official Python device SDK,
aliyun-iot-linkkit 1.2.13, embeds these five). A handshake on both runtimes against a chain under an RSA
test CA (trustme) and under an ECDSA P-384 test CA proves each loads and verifies with all five loaded,
and that a second load_verify_locations adds a root rather than replacing the first.
"""

import datetime
import hashlib
import json
import ssl
import time

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from host_tests.plugins.runtimes import assert_device_ok, device_script, run_script
from host_tests.plugins.wire import tcp_server

# SHA-256 of the DER, as published with the roots (shared/ca/README.md).
FINGERPRINTS = {
    "ALIYUN_IOT": "7CA438A3976B5242D231F861499822DA855831382735836B361E7E9715661676",
    "GLOBALSIGN_R1": "EBD41040E4BB3EC742C9E381D31EF2A41A48B6685C96E7CEF3C1DF6CD4331C99",
    "GLOBALSIGN_R6": "2CABEAFE37D06CA22ABA7391C0033D25982952C453647349763A3AB5AD6CCF69",
    "GLOBALSIGN_R46": "4FA3126D8D3A11D1C4855A4F807CBAD6CF919D3A5A88B03BEA2C6372D93C40C9",
    "GLOBALSIGN_E46": "CBB9C44D84B8043E1050EA31A69F514955D7BFD2E2C6B49301019AD61D9F5058",
}
# A root shipped although it ends within two years, and why; the successors named must outlive the window.
RETIRING = {
    "GLOBALSIGN_R1": (
        "the old *.iot-as-mqtt.* endpoints chain to it until they move to a newer root",
        ("GLOBALSIGN_R6", "GLOBALSIGN_R46", "GLOBALSIGN_E46"),
    ),
}
WINDOW = datetime.timedelta(days=2 * 365)


def _roots():
    from aliyun_iot import roots  # the firmware is on pytest's pythonpath (pyproject.toml)

    return {name: getattr(roots, name) for name in FINGERPRINTS}


def _not_after(der):
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def test_shipped_bytes_are_the_published_roots():
    got = {name: hashlib.sha256(der).hexdigest().upper() for name, der in _roots().items()}
    assert got == {k: v.replace(" ", "") for k, v in FINGERPRINTS.items()}


def test_no_root_expires_within_two_years_unless_a_successor_is_shipped():
    now = datetime.datetime.now(datetime.timezone.utc)
    roots = _roots()
    ends = {name: _not_after(der) for name, der in roots.items()}
    for name, end in ends.items():
        assert end > now, "%s expired on %s: remove it" % (name, end.date())
        if end - now < WINDOW:
            why = "%s ends on %s, within two years: ship a successor; RETIRING" % (name, end.date())
            assert name in RETIRING, why
    for name, (_why, successors) in RETIRING.items():
        assert ends[name] - now < WINDOW, "%s is not within two years of its end: unlist it" % name
        assert all(ends[s] - now >= WINDOW for s in successors), (name, successors)


def test_e46_is_ecdsa_p384():
    key = x509.load_der_x509_certificate(_roots()["GLOBALSIGN_E46"]).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"


def _p384_chain(tmp_path):
    """A CA on an ECDSA P-384 key (signing with SHA-384, as E46 does) and a leaf for localhost under it.
    trustme's ECDSA keys are P-256, so this one is made with cryptography directly."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test P-384 root")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = tmp_path / "p384.pem"
    pem.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    return ca.public_bytes(serialization.Encoding.DER), ctx


def _rsa_chain():
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", key_type=trustme.KeyType.RSA).configure_cert(ctx)
    return ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()), ctx


def _server(ctx):
    def handle(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                time.sleep(0.2)
        except OSError:
            pass  # the client refused the chain

    return handle


def test_roots_load_and_verify_on_both_runtimes(runtime, tmp_path):
    chains = {"rsa": _rsa_chain(), "p384": _p384_chain(tmp_path)}
    params = {}
    with tcp_server(_server(chains["rsa"][1]), "roots-rsa") as rsa_port:
        with tcp_server(_server(chains["p384"][1]), "roots-p384") as p384_port:
            for name, port in (("rsa", rsa_port), ("p384", p384_port)):
                path = tmp_path / (name + ".der")
                path.write_bytes(chains[name][0])
                params[name] = {"port": port, "ca": str(path)}
            path = tmp_path / "params.json"
            path.write_text(json.dumps(params))
            oks = assert_device_ok(run_script(runtime, device_script("roots_trust.py"), args=[path]))
    assert "p384: its CA loaded before the five roots verifies (a load adds)" in oks
    assert "loads GLOBALSIGN_E46" in oks


@pytest.mark.parametrize("host", ["bucket.oss-cn-shanghai.aliyuncs.com", "127.0.0.1"])
def test_an_ota_download_host_gets_every_root_or_the_ca_file(host, tmp_path):
    from aliyun_iot import tls
    assert len(tls.roots({"ca": ""}, host)) == 5
    ca = tmp_path / "ca.der"
    ca.write_bytes(_roots()["ALIYUN_IOT"])
    assert tls.roots({"ca": str(ca)}, host) == [_roots()["ALIYUN_IOT"]]
