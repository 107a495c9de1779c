"""Certificates and TLS context factories (TLS 1.2 or newer only).

With ``tls: {cert: null, key: null}`` the appliance generates a self-signed certificate for its
hostname under ``<data_dir>/tls/`` on first start, so STARTTLS and the implicit-TLS ports work
out of the box; production sites point ``tls.cert`` and ``tls.key`` at real files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet import ssl

#: A generated certificate is valid this long; it is replaced when it has expired.
SELF_SIGNED_DAYS = 825


def certificate_problem(cert_path: str, key_path: str, *, key_name: str = "tls") -> str | None:
    """Why the PEM files cannot serve TLS, naming the config key; None when they can."""
    for name, path in (("cert", cert_path), ("key", key_path)):
        if not os.path.isfile(path) or not os.access(path, os.R_OK):  # a directory: no traceback
            return f"{key_name}.{name}: cannot read {path!r}"
    try:
        with open(cert_path, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except ValueError as e:
        return f"{key_name}.cert: {cert_path!r} is not a PEM certificate: {e}"
    try:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (ValueError, TypeError) as e:
        return f"{key_name}.key: {key_path!r} is not an unencrypted PEM private key: {e}"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(serialization.Encoding.PEM, public) != (
        key.public_key().public_bytes(serialization.Encoding.PEM, public)
    ):
        return f"{key_name}.key: {key_path!r} does not belong to the certificate {cert_path!r}"
    return None


def generate_self_signed(
    cert_path: str,
    key_path: str,
    hostname: str,
    validity: tuple[datetime.datetime, datetime.datetime] | None = None,
) -> None:
    """Write a new key (0600) and a self-signed certificate for ``hostname`` and loopback.

    ``validity`` (from, until) defaults to now until ``SELF_SIGNED_DAYS`` ahead.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    valid_from, valid_until = validity or (
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=SELF_SIGNED_DAYS),
    )
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(os.path.dirname(cert_path), mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_certificate(config) -> str | None:
    """Generate the self-signed pair if the config asks for it and none serves yet.

    A generated certificate is replaced when it is damaged, has expired, or does not name
    the configured hostname (the admin changed ``hostname``).

    Returns a line for the log when a certificate was made.
    """
    if config.tls.cert:
        return None
    cert, key = config.tls_cert_path, config.tls_key_path
    # certificate_problem first: _still_good cannot read a damaged file.
    if certificate_problem(cert, key) is None and _still_good(cert, config.hostname):
        return None
    generate_self_signed(cert, key, config.hostname)
    return f"generated a self-signed TLS certificate for {config.hostname} in {cert}"


def _still_good(cert_path: str, hostname: str) -> bool:
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return hostname.lower() in (n.lower() for n in names.get_values_for_type(x509.DNSName))


def server_context_factory(config) -> ssl.CertificateOptions:
    """Server-side TLS options from the configured (or generated) certificate and key."""
    with open(config.tls_cert_path, "rb") as f:
        chain = [
            crypto.X509.from_cryptography(c) for c in x509.load_pem_x509_certificates(f.read())
        ]
    with open(config.tls_key_path, "rb") as f:
        key = crypto.PKey.from_cryptography_key(
            serialization.load_pem_private_key(f.read(), password=None)
        )
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
