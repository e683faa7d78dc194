"""The SMTP client and pool against real aiosmtpd servers: STARTTLS, its plain-text fallback,
per-connection message limits, and a server that drops idle sessions."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postwire.dispatcher.pool import ConnectionPool
from postwire.dispatcher.smtp_client import ClientConfig, SmtpConnection
from postwire.testing.smtp import SinkHandler, SmtpSink

MESSAGE = b"From: s@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.tls.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


@pytest_asyncio.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, SinkHandler]]:
    """An MX that offers STARTTLS with a self-signed certificate (the common case on the internet)."""
    handler = SinkHandler()
    ctx = self_signed(tmp_path)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="mx.tls.test", tls_context=ctx, require_starttls=False),
        "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], handler
    server.close()
    await server.wait_closed()


def config(**kw: object) -> ClientConfig:
    values: dict[str, object] = dict(ehlo_hostname="dispatcher.test", connect_timeout_s=5,
                                     command_timeout_s=10)
    values.update(kw)
    return ClientConfig(**values)  # type: ignore[arg-type]


async def test_opportunistic_starttls_without_verification(tls_server: tuple[int, SinkHandler]) -> None:
    port, handler = tls_server
    conn = await SmtpConnection.open("mx.tls.test", "127.0.0.1", port, config())
    assert conn.client.get_transport_info("sslcontext") is not None
    result = await conn.send("s@example.org", ["r@tls.test"], MESSAGE)
    assert result.replies["r@tls.test"].outcome == "delivered" and result.reusable
    await conn.quit()
    assert len(handler.received) == 1


async def test_failed_tls_handshake_falls_back_to_plain_text(tls_server: tuple[int, SinkHandler]) -> None:
    port, handler = tls_server
    pool = ConnectionPool(config(tls_verify=True), max_per_host=1, max_messages=10, idle_s=30)
    async with pool.lease("mx.tls.test", port, ["127.0.0.1"]) as conn:  # the self-signed cert fails
        assert conn.client.get_transport_info("sslcontext") is None
        result = await conn.send("s@example.org", ["r@tls.test"], MESSAGE)
    await pool.close()
    assert result.replies["r@tls.test"].outcome == "delivered"
    assert len(handler.received) == 1


async def test_messages_per_connection_limit_and_rset_reuse(smtp_sink: SmtpSink) -> None:
    pool = ConnectionPool(config(), max_per_host=1, max_messages=2, idle_s=30)
    seen: list[int] = []
    for i in range(5):
        async with pool.lease("mx.test", smtp_sink.port, ["127.0.0.1"]) as conn:
            seen.append(id(conn))
            result = await conn.send("s@example.org", [f"r{i}@example.test"], MESSAGE)
            assert result.replies[f"r{i}@example.test"].outcome == "delivered"
    await pool.close()
    assert len(set(seen)) == 3  # 2 + 2 + 1 messages
    assert smtp_sink.max_connections == 1 and len(smtp_sink.handler.received) == 5


async def test_a_session_the_server_dropped_is_replaced(smtp_sink: SmtpSink) -> None:
    pool = ConnectionPool(config(), max_per_host=1, max_messages=100, idle_s=30)
    async with pool.lease("mx.test", smtp_sink.port, ["127.0.0.1"]) as conn:
        await conn.send("s@example.org", ["a@example.test"], MESSAGE)
        first = conn
    assert first.client.transport is not None
    first.client.transport.abort()  # as if the server timed the idle session out
    async with pool.lease("mx.test", smtp_sink.port, ["127.0.0.1"]) as conn:
        result = await conn.send("s@example.org", ["b@example.test"], MESSAGE)
        assert conn is not first
    await pool.close()
    assert result.replies["b@example.test"].outcome == "delivered"


async def test_connection_refused_is_a_temporary_failure() -> None:
    import socket

    from postwire.dispatcher.smtp_client import ConnectFailure

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        try:
            await SmtpConnection.open("mx.down.test", "127.0.0.1", port, config(connect_timeout_s=2))
        except ConnectFailure as e:
            assert e.reply.outcome == "deferred" and e.reply.enhanced == "4.4.1"
            assert e.reply.mx_host == "mx.down.test"
        else:
            raise AssertionError("connected to a closed port")
