"""kumo's local CA and HTTPS server certificate, made on first start and kept in the data dir."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kumo.config import Paths


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def _short_hash(text: str) -> str:
    """Tells CAs of different data dirs apart within the 64-character limit of a common name."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _ensure_ca(paths: Paths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if paths.ca_cert.exists() and paths.ca_key.exists():
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kumo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"kumo local CA {_short_hash(str(paths.root))}")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(paths.ca_key, _key_pem(key))
    paths.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _server_cert_covers(paths: Paths, names: list[str], ca: x509.Certificate) -> bool:
    if not (paths.server_cert.exists() and paths.server_key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    if cert.issuer != ca.subject:
        return False
    if cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=7):
        return False
    have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(have) >= set(_san(names))


def ensure_certificates(paths: Paths, names: list[str]) -> bool:
    """Make the CA (once) and a server certificate for `names` (again if they changed).
    Returns True when something was created."""
    created = not paths.ca_cert.exists()
    ca, ca_key = _ensure_ca(paths)
    if not _server_cert_covers(paths, names, ca):
        created = True
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=825))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(paths.server_key, _key_pem(key))
        paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                      + ca.public_bytes(serialization.Encoding.PEM))
    bundle = Path(certifi.where()).read_bytes() + b"\n" + paths.ca_cert.read_bytes()
    if not paths.ca_bundle.exists() or paths.ca_bundle.read_bytes() != bundle:
        paths.ca_bundle.write_bytes(bundle)
    return created
