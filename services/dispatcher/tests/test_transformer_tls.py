"""mTLS between the dispatcher's TransformerClient and the real transformer server, on loopback.

The certificates are made here with `cryptography`: a CA that signs the server's certificate (for the name
transformer.test only, so the client must override the name it checks when it dials 127.0.0.1) and the
dispatcher's client certificate, and a second CA with a client certificate the server must refuse.
"""

# uses postwire.transformer: TLS between the client and the real gRPC server
from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postwire.dispatcher.settings import DispatcherSettings
from postwire.dispatcher.transform import TransformerClient, TransformerTls, TransformerUnavailable
from postwire.transformer.service import serve
from postwire.transformer.settings import TransformerSettings

SERVER_NAME = "transformer.test"
MESSAGE = (b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n<style>p{color:red}</style><p>hi</p>\r\n")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


Key = ec.EllipticCurvePrivateKey


def _issue(subject: str, key: Key, issuer: x509.Name, issuer_key: Key, *, ca: bool = False,
           server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    elif server:
        san = x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)])
        builder = (builder.add_extension(san, critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    else:
        usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        builder = builder.add_extension(usage, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: Key | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def _make_pki(d: Path) -> Pki:
    keys = {name: ec.generate_private_key(ec.SECP256R1())
            for name in ("ca", "server", "client", "other_ca", "other_client")}
    ca = _issue("Postwire test CA", keys["ca"], _name("Postwire test CA"), keys["ca"], ca=True)
    other_ca = _issue("Some other CA", keys["other_ca"], _name("Some other CA"), keys["other_ca"], ca=True)
    server = _issue(SERVER_NAME, keys["server"], ca.subject, keys["ca"], server=True)
    client = _issue("dispatcher", keys["client"], ca.subject, keys["ca"])
    other_client = _issue("dispatcher", keys["other_client"], other_ca.subject, keys["other_ca"])
    return Pki(
        ca=_write(d / "ca.pem", ca), server_cert=_write(d / "server.pem", server),
        server_key=_write(d / "server.key", key=keys["server"]),
        client_cert=_write(d / "client.pem", client), client_key=_write(d / "client.key", key=keys["client"]),
        other_ca=_write(d / "other-ca.pem", other_ca),
        other_client_cert=_write(d / "other-client.pem", other_client),
        other_client_key=_write(d / "other-client.key", key=keys["other_client"]),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mtls_addr(pki: Pki) -> AsyncIterator[str]:
    """The real transformer with TLS and required client certificates, on a free loopback port."""
    settings = TransformerSettings(grpc_port=0, transform_workers=1, grpc_tls_cert_file=pki.server_cert,
                                   grpc_tls_key_file=pki.server_key, grpc_tls_client_ca_file=pki.ca)
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, port.set_result))
    yield f"127.0.0.1:{await port}"
    stop.set()
    await task


async def _inline(addr: str, tls: TransformerTls | None) -> bool:
    client = TransformerClient(addr, timeout_s=20, tls=tls)
    try:
        reply = await client.inline_css(MESSAGE, "css-inline")
    finally:
        await client.close()
    assert reply is not None
    return reply.changed


async def test_client_certificate_of_the_ca_is_accepted(mtls_addr: str, pki: Pki) -> None:
    tls = TransformerTls(pki.ca, pki.client_cert, pki.client_key, server_name=SERVER_NAME)
    assert await _inline(mtls_addr, tls)


async def test_settings_build_the_same_client(mtls_addr: str, pki: Pki) -> None:
    settings = DispatcherSettings(
        transformer_addr=mtls_addr, transformer_tls_ca_file=pki.ca, transformer_tls_cert_file=pki.client_cert,
        transformer_tls_key_file=pki.client_key, transformer_tls_server_name=SERVER_NAME)
    client = TransformerClient.from_settings(settings)
    try:
        reply = await client.inline_css(MESSAGE, "")
    finally:
        await client.close()
    assert reply is not None and reply.changed
    assert TransformerTls.from_settings(DispatcherSettings()) is None  # nothing set: plaintext


@pytest.mark.parametrize("case", ["no client certificate", "certificate of another CA", "plaintext",
                                  "server name not in its certificate"])
async def test_refused_connections_are_unavailable_so_retried_later(mtls_addr: str, pki: Pki,
                                                                     case: str) -> None:
    tls = {
        "no client certificate": TransformerTls(pki.ca, server_name=SERVER_NAME),
        "certificate of another CA": TransformerTls(pki.ca, pki.other_client_cert, pki.other_client_key,
                                                    server_name=SERVER_NAME),
        "plaintext": None,
        "server name not in its certificate": TransformerTls(pki.ca, pki.client_cert, pki.client_key),
    }[case]
    with pytest.raises(TransformerUnavailable) as info:
        await _inline(mtls_addr, tls)
    assert str(info.value).startswith(grpc.StatusCode.UNAVAILABLE.name)


def test_certificate_and_key_go_together(pki: Pki) -> None:
    with pytest.raises(ValueError, match="go together"):
        TransformerTls(pki.ca, cert_file=pki.client_cert)
    with pytest.raises(ValueError, match="go together"):
        TransformerSettings(grpc_tls_cert_file=pki.server_cert)
    with pytest.raises(ValueError, match="needs the server's certificate"):
        TransformerSettings(grpc_tls_client_ca_file=pki.ca)
