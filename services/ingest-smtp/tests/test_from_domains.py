"""Sending only From verified domains over SMTP (docs/domains.md): DATA answers 550 5.7.1 for mail From a
domain the account has not verified, and nothing is queued; a verified domain and its subdomains pass; the
trusted network's account is held to the same rule. Real server, nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from typing import Any

import pytest_asyncio
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.topology import INBOUND
from postwire.db.accounts import NewCredentials, create_account
from postwire.db.domains import add_domain, mark_verified
from postwire.db.sender_domains import set_allow_unverified_from

Sessions = async_sessionmaker[AsyncSession]  # the shared `sessions` fixture (postwire.testing.fixtures)


@pytest_asyncio.fixture
async def strict(sessions: Sessions) -> NewCredentials:
    """A new account as `postwire account create` makes it: verified From domains only."""
    async with sessions.begin() as s:
        return await create_account(s, f"strict-{uuid.uuid4().hex[:10]}")


async def domain_of(sessions: Sessions, account_id: str, *, verified: bool) -> str:
    name = f"shop{uuid.uuid4().hex[:8]}.example"
    async with sessions.begin() as s:
        await add_domain(s, account_id, name, "ed25519-sha256")
        if verified:
            assert await mark_verified(s, account_id, name) is not None
    return name


def data_reply(port: int, creds: NewCredentials | None, header_from: str) -> tuple[int, str]:
    """The server's answer to DATA for one message From ``header_from``."""
    msg = (f"From: {header_from}\r\nTo: someone@rcpt.example.com\r\nSubject: hi\r\n\r\nhello\r\n").encode()
    client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.com", timeout=60)
    try:
        client.ehlo()
        if creds is not None:
            client.login(creds.smtp_username, creds.smtp_password)
        client.mail("bounces@envelope.example")
        client.rcpt("someone@rcpt.example.com")
        code, text = client.data(msg)
        return code, text.decode()
    finally:
        client.quit()


async def inbound_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(INBOUND)).state.messages)


async def test_data_refuses_mail_from_a_domain_the_account_has_not_verified(
        start_ingest: Any, strict: NewCredentials, js: JetStreamContext, sessions: Sessions) -> None:
    ingest = await start_ingest(from_policy_ttl_s=0)
    registered = await domain_of(sessions, strict.account_id, verified=False)

    for sender in ("App <app@example.com>", f"app@{registered}"):
        code, text = await asyncio.to_thread(data_reply, ingest.port, strict, sender)
        domain = sender.rpartition("@")[2].rstrip(">")
        assert (code, text.split(" ")[0]) == (550, "5.7.1") and domain in text, text
    assert await inbound_count(js) == 0


async def test_a_verified_domain_and_its_subdomains_are_accepted(
        start_ingest: Any, strict: NewCredentials, js: JetStreamContext, sessions: Sessions) -> None:
    ingest = await start_ingest(from_policy_ttl_s=0)
    domain = await domain_of(sessions, strict.account_id, verified=True)

    for sender in (f"Shop <orders@{domain}>", f"news@eu.{domain}", f"\"a@b.example\" <x@{domain.upper()}>"):
        code, text = await asyncio.to_thread(data_reply, ingest.port, strict, sender)
        assert code == 250, (sender, text)
    code, text = await asyncio.to_thread(data_reply, ingest.port, strict, f"a@{domain}, b@other.example")
    assert code == 550 and "other.example" in text
    assert await inbound_count(js) == 3


async def test_the_trusted_network_account_is_held_to_its_domains_unless_allowed(
        start_ingest: Any, strict: NewCredentials, js: JetStreamContext, sessions: Sessions) -> None:
    ingest = await start_ingest(trusted_networks="127.0.0.1/32", trusted_account=strict.account_id,
                                from_policy_ttl_s=0)
    code, _ = await asyncio.to_thread(data_reply, ingest.port, None, "app@example.com")
    assert code == 550
    async with sessions.begin() as s:
        assert await set_allow_unverified_from(s, strict.account_id, True)
    code, _ = await asyncio.to_thread(data_reply, ingest.port, None, "app@example.com")
    assert code == 250
    assert await inbound_count(js) == 1
