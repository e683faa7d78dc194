"""The STARTTLS context: the operator's certificate, or a self-signed one generated once for dev runs.

Submission clients (apps, swaks, smtp-source) rarely verify the server certificate of a local relay, but
the password must still not cross the wire in clear text, so a self-signed certificate beats no TLS.
Everything here does file I/O or key generation: call it in a thread, never on the event loop.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SELF_SIGNED_NAME = "selfsigned.pem"
_VALIDITY = datetime.timedelta(days=3650)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context that speaks TLS 1.2 and newer only."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def load_context(cert_file: Path | None, key_file: Path | None, data_dir: Path,
                 hostname: str) -> ssl.SSLContext:
    """The configured certificate if there is one, else the self-signed one in ``data_dir/tls``."""
    if cert_file is not None and key_file is not None:
        return server_context(cert_file, key_file)
    pem = ensure_self_signed(data_dir / "tls", hostname)
    return server_context(pem, pem)


def ensure_self_signed(directory: Path, hostname: str) -> Path:
    """Reuse ``directory/selfsigned.pem`` while it is valid, else write a new key+certificate there.

    Key and certificate share one file, replaced atomically, so replicas sharing a data dir can never
    load a key from one generation and a certificate from another.
    """
    pem = directory / SELF_SIGNED_NAME
    if pem.exists() and _still_valid(pem.read_bytes()):
        return pem
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{SELF_SIGNED_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the key is a secret
    with os.fdopen(fd, "wb") as f:
        f.write(_self_signed_pem(hostname))
    tmp.replace(pem)
    return pem


def _still_valid(data: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        return False
    return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)


def _self_signed_pem(hostname: str) -> bytes:
    """An ECDSA P-256 key (fast to generate) and a certificate for ``hostname``, localhost and loopback."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([hostname, "localhost"]) if n]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)
