"""The SMTP client and pool against real aiosmtpd servers: STARTTLS, its plain-text fallback,
per-connection message limits, and a server that drops idle sessions."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postwire.dispatcher.shaping import parse_rules
from postwire.dispatcher.smtp_client import ClientConfig, SmtpConnection, wire_data
from postwire.dispatcher.smtp_pool import ConnectionPool
from postwire.dispatcher.throttle import Budget, Shaper
from postwire.testing.smtp import SinkHandler, SmtpSink


def budget(mx_host: str = "mx.test", **rule: Any) -> Budget:
    """A default-rule budget with these limits (no pacing unless asked)."""
    return Shaper(parse_rules({"default": rule})).budget_for(mx_host)


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
    assert conn.tls
    result = await conn.send("s@example.org", ["r@tls.test"], MESSAGE)
    assert result.replies["r@tls.test"].outcome == "delivered" and result.reusable
    await conn.quit()
    assert len(handler.received) == 1


async def test_failed_tls_handshake_falls_back_to_plain_text(tls_server: tuple[int, SinkHandler]) -> None:
    port, handler = tls_server
    pool = ConnectionPool(config(tls_verify=True), idle_s=30)
    # the self-signed certificate fails verification
    async with pool.lease(budget(max_connections=1), "mx.tls.test", port, ["127.0.0.1"]) as conn:
        assert not conn.tls
        result = await conn.send("s@example.org", ["r@tls.test"], MESSAGE)
    await pool.close()
    assert result.replies["r@tls.test"].outcome == "delivered"
    assert len(handler.received) == 1


async def test_required_tls_never_falls_back_to_plain_text(tls_server: tuple[int, SinkHandler],
                                                          smtp_sink: SmtpSink) -> None:
    from postwire.dispatcher.smtp_client import ConnectFailure

    port, handler = tls_server
    pool = ConnectionPool(config(), idle_s=30)
    strict = budget(max_connections=1, tls="required", tls_verify=True)
    with pytest.raises(ConnectFailure) as failed:  # handshake fails verification: no plain-text retry
        async with pool.lease(strict, "mx.tls.test", port, ["127.0.0.1"]):
            pass
    assert failed.value.reply.enhanced == "4.7.5" and failed.value.reply.outcome == "deferred"
    with pytest.raises(ConnectFailure) as failed:  # the plain sink does not offer STARTTLS at all
        async with pool.lease(budget(tls="required"), "mx.test", smtp_sink.port, ["127.0.0.1"]):
            pass
    assert failed.value.reply.enhanced == "4.7.10"
    async with pool.lease(budget(tls="required"), "mx.tls.test", port, ["127.0.0.1"]) as conn:
        assert conn.tls  # unverified TLS is fine
        await conn.send("s@example.org", ["r@tls.test"], MESSAGE)
    await pool.close()
    assert len(handler.received) == 1 and smtp_sink.handler.received == []


async def test_messages_per_connection_limit_and_rset_reuse(smtp_sink: SmtpSink) -> None:
    pool = ConnectionPool(config(), idle_s=30)
    limits = budget(max_connections=1, max_messages_per_connection=2)
    seen: list[int] = []
    for i in range(5):
        async with pool.lease(limits, "mx.test", smtp_sink.port, ["127.0.0.1"]) as conn:
            seen.append(id(conn))
            result = await conn.send("s@example.org", [f"r{i}@example.test"], MESSAGE)
            assert result.replies[f"r{i}@example.test"].outcome == "delivered"
    await pool.close()
    assert len(set(seen)) == 3  # 2 + 2 + 1 messages
    assert smtp_sink.max_connections == 1 and len(smtp_sink.handler.received) == 5


async def test_a_session_the_server_dropped_is_replaced(smtp_sink: SmtpSink) -> None:
    pool = ConnectionPool(config(), idle_s=30)
    limits = budget(max_connections=1)
    async with pool.lease(limits, "mx.test", smtp_sink.port, ["127.0.0.1"]) as conn:
        await conn.send("s@example.org", ["a@example.test"], MESSAGE)
        first = conn
    first.wire.abort()  # as if the server timed the idle session out
    async with pool.lease(limits, "mx.test", smtp_sink.port, ["127.0.0.1"]) as conn:
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


@pytest.mark.parametrize("pipelining", [True, False])
async def test_each_recipient_gets_its_own_reply_with_and_without_pipelining(pipelining: bool) -> None:
    """RFC 2920: with PIPELINING, MAIL, the RCPTs and DATA go out in one write and the replies are read
    back in order; every recipient still gets the reply that was meant for it, and a message whose
    recipients were all refused is never sent (DATA refused, RSET, the session stays usable)."""
    sink = await SmtpSink(pipelining=pipelining).start()
    sink.handler.script("full@example.test", "452 4.2.2 Mailbox full")
    sink.handler.script("gone@example.test", "550 5.1.1 No such user", "550 5.1.1 No such user")
    try:
        conn = await SmtpConnection.open("mx.test", "127.0.0.1", sink.port, config())
        assert conn.supports("PIPELINING") is pipelining
        result = await conn.send("s@example.org", ["a@example.test", "full@example.test", "gone@example.test",
                                                   "b@example.test"], MESSAGE)
        outcomes = {rcpt: (r.outcome, r.code) for rcpt, r in result.replies.items()}
        refused = await conn.send("s@example.org", ["gone@example.test"], MESSAGE)
        after = await conn.send("s@example.org", ["c@example.test"], b".starts with a dot\r\n.\r\n..\r\n")
        await conn.quit()
    finally:
        await sink.stop()
    assert outcomes == {"a@example.test": ("delivered", 250), "full@example.test": ("deferred", 452),
                        "gone@example.test": ("failed", 550), "b@example.test": ("delivered", 250)}
    assert refused.replies["gone@example.test"].outcome == "failed" and refused.reusable
    assert after.replies["c@example.test"].outcome == "delivered"
    assert [r.rcpt_tos for r in sink.handler.received] == [["a@example.test", "b@example.test"],
                                                           ["c@example.test"]]
    assert sink.handler.received[1].data == b".starts with a dot\r\n.\r\n..\r\n"  # dot-stuffed on the wire


@pytest.mark.parametrize(("data", "wire"), [
    (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
    (b"a\nb", b"a\r\nb\r\n.\r\n"),  # bare LF, and no line end at the end
    (b"a\rb\r\n", b"a\r\nb\r\n.\r\n"),  # bare CR
    (b"a\r\n\nb\r\n", b"a\r\n\r\nb\r\n.\r\n"),  # LF after a CRLF
    (b".x\r\n.\r\n", b"..x\r\n..\r\n.\r\n"),  # dots that start lines are doubled
])
def test_the_data_goes_out_with_crlf_line_ends_and_stuffed_dots(data: bytes, wire: bytes) -> None:
    assert wire_data(data) == wire
