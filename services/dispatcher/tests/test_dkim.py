"""Return paths and DKIM end to end: domains registered in PostgreSQL, the dispatcher in-process, the
signature checked by dkimpy against the key published in the loopback DNS server, the envelope sender
decoded with the VERP secret."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from postwire.core import tracking
from postwire.core.settings import PostwireSettings, verp_secret_bytes
from postwire.core.topology import TRACKING
from postwire.core.verp import DecodedVerp, decode, matches
from postwire.db.accounts import create_account
from postwire.db.domains import Algorithm, add_domain, dns_records, set_tracking_host
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Domain
from postwire.dispatcher.dkim import AccountKeys, KeyCache, KeysUnavailable
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.ports import free_port
from postwire.testing.smtp import Received, SmtpSink

Register = Callable[..., Awaitable[tuple[str, Domain]]]


@pytest_asyncio.fixture
async def register(pg_url: str, dns_server: DnsServer) -> AsyncIterator[Register]:
    """A new account owning ``name``; its DKIM TXT record is published in the loopback DNS server."""
    engine = make_engine(pg_url)

    async def register_(name: str, algorithm: Algorithm = "rsa-sha256", publish: bool = True,
                        ) -> tuple[str, Domain]:
        async with make_sessionmaker(engine).begin() as s:
            creds = await create_account(s, f"sign-{uuid.uuid4().hex[:10]}")
            row = await add_domain(s, creds.account_id, name, algorithm)
        if publish:
            [record] = [r for r in dns_records(row, PostwireSettings()) if r.purpose == "dkim"]
            dns_server.add(record.name, "TXT", record.value)
        return creds.account_id, row

    yield register_
    await engine.dispose()


def loopback_txt(dns_server: DnsServer) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc, asking only the loopback DNS server (never the system resolver)."""

    def txt(name: bytes | str, timeout: float = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        reply = dns.query.udp(dns.message.make_query(qname, dns.rdatatype.TXT), dns_server.host,
                              timeout=timeout, port=dns_server.port)
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None

    return txt


def return_path(dispatcher: Any, address: str) -> DecodedVerp:
    """Decode an envelope sender the way the bounce receiver will, with the dispatcher's own settings."""
    return decode(address, verp_secret_bytes(dispatcher.settings), dispatcher.settings.bounce_domain)


async def verifies(received: Received, dns_server: DnsServer) -> bool:
    result = await asyncio.to_thread(dkim.verify, received.data, dnsfunc=loopback_txt(dns_server))
    return bool(result)


def message(from_addr: str, to: str, body: str = "Hello") -> bytes:
    return (f"From: Sender <{from_addr}>\r\nTo: {to}\r\nSubject: Signed\r\n"
            f"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{uuid.uuid4().hex}@example.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "List-Unsubscribe: <https://example.test/u>\r\n\r\n"
            f"{body}\r\n.leading dot line\r\n").encode()


def signature_tags(received: Received) -> dict[str, str]:
    value = str(received.message()["DKIM-Signature"])
    return {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in "".join(value.split()).split(";"))}


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
async def test_signed_message_verifies_against_the_published_key(
        algorithm: Algorithm, register: Register, start_dispatcher: Any, submit: Any, events: Any,
        dns_server: DnsServer, smtp_sink: SmtpSink, domain: str) -> None:
    sending = f"send-{domain}"
    account_id, row = await register(sending, algorithm)
    dns_server.add_mail_domain(domain)
    rcpt = f"Reader@{domain}"
    dispatcher = await start_dispatcher()
    mid = await submit([rcpt], message(f"news@{sending}", rcpt), account_id=account_id,
                       mail_from=f"news@{sending}")

    [received] = await smtp_sink.handler.wait_for(1)
    assert await verifies(received, dns_server)
    tags = signature_tags(received)
    assert (tags["a"], tags["d"], tags["s"], tags["c"]) == (algorithm, sending, row.dkim_selector,
                                                             "relaxed/relaxed")
    assert "l" not in tags
    signed = tags["h"].lower().split(":")
    assert {"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
            "list-unsubscribe"} <= set(signed)
    assert signed.count("from") == 2  # over-signed: a second From added in transit breaks it
    decoded = return_path(dispatcher, received.mail_from)
    assert decoded.message_id == mid and matches(decoded, rcpt)
    [accepted] = await eventually(lambda: events.of("accepted"))
    assert accepted.mail_from == f"news@{sending}"  # events carry the customer's sender, not VERP


async def test_tampered_signed_message_does_not_verify(register: Register, start_dispatcher: Any,
                                                       submit: Any, dns_server: DnsServer,
                                                       smtp_sink: SmtpSink, domain: str) -> None:
    """The check above means something: the same verifier rejects an altered body."""
    sending = f"send-{domain}"
    account_id, _ = await register(sending, "ed25519-sha256")
    dns_server.add_mail_domain(domain)
    await start_dispatcher()
    await submit([f"x@{domain}"], message(f"a@{sending}", f"x@{domain}"), account_id=account_id)
    [received] = await smtp_sink.handler.wait_for(1)
    received.data = received.data.replace(b"Hello", b"Hallo")
    assert not await verifies(received, dns_server)


async def test_three_recipients_at_one_domain_get_three_transactions_with_their_own_verp(
        register: Register, start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str) -> None:
    sending = f"send-{domain}"
    account_id, _ = await register(sending, "ed25519-sha256")
    dns_server.add_mail_domain(domain)
    rcpts = [f"one@{domain}", f"two@{domain}", f"three@{domain}"]
    dispatcher = await start_dispatcher()
    mid = await submit(rcpts, message(f"a@{sending}", ", ".join(rcpts)), account_id=account_id)

    received = await smtp_sink.handler.wait_for(3)
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(rcpts)
    assert all(len(r.rcpt_tos) == 1 for r in received)
    assert len({r.mail_from for r in received}) == 3
    for r in received:
        decoded = return_path(dispatcher, r.mail_from)
        assert decoded.message_id == mid and matches(decoded, r.rcpt_tos[0])
        assert not any(matches(decoded, other) for other in rcpts if other != r.rcpt_tos[0])
        assert await verifies(r, dns_server)
    assert len(smtp_sink.handler.received) == 3  # signed once, stored once: no duplicate deliveries
    await eventually(lambda: len(events.of("delivered")) == 3)


async def test_subdomain_from_is_signed_by_the_registered_parent(
        register: Register, start_dispatcher: Any, submit: Any, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str) -> None:
    sending = f"send-{domain}"
    account_id, _ = await register(sending, "rsa-sha256")
    dns_server.add_mail_domain(domain)
    await start_dispatcher()
    await submit([f"x@{domain}"], message(f"a@news.{sending.upper()}", f"x@{domain}"), account_id=account_id)
    [received] = await smtp_sink.handler.wait_for(1)
    assert signature_tags(received)["d"] == sending
    assert await verifies(received, dns_server)


async def test_unregistered_from_domain_goes_out_unsigned_with_verp(
        register: Register, start_dispatcher: Any, submit: Any, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str, make_mime: Any) -> None:
    account_id, _ = await register(f"other-{domain}")  # the account has a domain, just not this one
    dns_server.add_mail_domain(domain)
    dispatcher = await start_dispatcher()
    mid = await submit([f"x@{domain}"], make_mime(), account_id=account_id)
    [received] = await smtp_sink.handler.wait_for(1)
    assert b"DKIM-Signature" not in received.data
    assert return_path(dispatcher, received.mail_from).message_id == mid


async def test_null_sender_stays_null(start_dispatcher: Any, submit: Any, dns_server: DnsServer,
                                      smtp_sink: SmtpSink, domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    await start_dispatcher()
    await submit([f"x@{domain}"], make_mime(), mail_from="")
    [received] = await smtp_sink.handler.wait_for(1)
    assert received.mail_from in ("", "<>")


async def test_message_waits_while_keys_cannot_be_read(start_dispatcher: Any, submit: Any,
                                                       dns_server: DnsServer, smtp_sink: SmtpSink,
                                                       domain: str, make_mime: Any) -> None:
    """No database and nothing cached: the router naks (it does not send possibly-unsigned mail)."""
    dns_server.add_mail_domain(domain)

    def retries() -> float:
        return REGISTRY.get_sample_value("postwire_dispatcher_routed_messages_total",
                                         {"outcome": "retry"}) or 0.0

    before = retries()
    await start_dispatcher(database_url=f"postgresql://postwire@127.0.0.1:{free_port()}/none",
                           dkim_retry_s=0.2, dkim_lookup_timeout_s=1)
    await submit([f"x@{domain}"], make_mime())
    await eventually(lambda: retries() >= before + 2)
    assert smtp_sink.handler.received == []


async def test_cache_serves_hits_shares_misses_and_falls_back_to_stale_keys() -> None:
    now = [0.0]
    calls: list[str] = []
    fail = [False]

    async def load(account_id: str) -> AccountKeys:
        calls.append(account_id)
        await asyncio.sleep(0.01)
        if fail[0]:
            raise OSError("database down")
        return AccountKeys({})

    cache = KeyCache(load, ttl_s=10, clock=lambda: now[0])
    await asyncio.gather(*(cache.get("a") for _ in range(20)))
    assert calls == ["a"]  # concurrent misses share one query
    await cache.get("a")
    assert calls == ["a"]  # a cached miss ("no domains") costs nothing
    now[0] = 11
    fail[0] = True
    assert not await cache.get("a")  # expired + database down → the stale entry
    with pytest.raises(KeysUnavailable):
        await cache.get("never-seen")


async def test_two_deferred_recipients_of_one_message_at_one_domain_are_both_retried(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str, make_mime: Any) -> None:
    """Per-recipient transactions mean two OutboundMessages of one message share a domain: their retries
    must not share a Nats-Msg-Id, or JetStream drops one of them as a duplicate."""
    dns_server.add_mail_domain(domain)
    first, second = f"first@{domain}", f"second@{domain}"
    smtp_sink.handler.script(first, "451 4.3.0 later")
    smtp_sink.handler.script(second, "451 4.3.0 later")
    await start_dispatcher()
    await submit([first, second], make_mime())
    await eventually(lambda: events.of("delivered", first) and events.of("delivered", second), timeout=20)


async def test_tracked_message_gets_its_own_tokens_and_a_signature_per_recipient(
        register: Register, start_dispatcher: Any, submit: Any, events: Any, transformer: Any,
        dns_server: DnsServer, smtp_sink: SmtpSink, domain: str, js: Any) -> None:
    """Inline once, personalise per recipient, sign after personalising: every copy verifies."""
    sending = f"track-{domain}"
    account_id, _ = await register(sending)
    dns_server.add_mail_domain(domain)
    rcpts = [f"one@{domain}", f"two@{domain}"]
    html = ('<html><body><p>Hi</p><a href="https://shop.example/a?x=1">a</a>'
            '<a href="https://shop.example/b">b</a></body></html>')
    raw = (f"From: News <news@{sending}>\r\nTo: list@{sending}\r\nSubject: Tracked\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode()
    dispatcher = await start_dispatcher(transformer_addr=transformer.addr,
                                        tracking_base_url="https://t.example.test")
    mid = await submit(rcpts, raw, account_id=account_id, mail_from=f"news@{sending}", inline_css=True,
                       track_clicks=True, track_opens=True)

    received = await smtp_sink.handler.wait_for(2)
    assert transformer.servicer.calls == 1  # one transform for both recipients
    key = tracking.tracking_key(verp_secret_bytes(dispatcher.settings))
    seen: set[str] = set()
    for copy in received:
        assert await verifies(copy, dns_server)
        body = copy.data.decode()
        assert 'style="x"' in body and "PWT" not in body  # inlined, and no placeholder left
        found = re.findall(r'https://t\.example\.test/t/([co])/([A-Za-z0-9_-]+)', body)
        assert [k for k, _ in found] == ["c", "c", "o"]
        tokens = [tracking.read_token(key, t) for _, t in found]
        index = rcpts.index(copy.rcpt_tos[0])
        assert {(t.group_id, t.recipient_index) for t in tokens} == {(mid, index)}
        assert [t.link_index for t in tokens] == [0, 1, tracking.OPEN]
        seen.update(t for _, t in found)
    assert len(seen) == 6  # nothing shared between the two recipients
    entry = await (await js.key_value(TRACKING)).get(mid)
    stored = tracking.TrackedMessage.from_bytes(entry.value)
    assert stored.links == ["https://shop.example/a?x=1", "https://shop.example/b"]
    assert stored.recipients == rcpts and stored.account_id == account_id


async def test_tracking_links_use_the_from_domains_tracking_host(
        register: Register, start_dispatcher: Any, submit: Any, transformer: Any, pg_url: str,
        dns_server: DnsServer, smtp_sink: SmtpSink, domain: str) -> None:
    sending = f"host-{domain}"
    account_id, _ = await register(sending)
    engine = make_engine(pg_url)
    async with make_sessionmaker(engine).begin() as s:
        assert await set_tracking_host(s, account_id, sending, f"track.{sending}") is not None
    await engine.dispose()
    dns_server.add_mail_domain(domain)
    raw = (f"From: news@{sending}\r\nTo: r@{domain}\r\nSubject: Host\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: text/html\r\n\r\n<a href=\"https://shop.example/\">x</a>\r\n").encode()
    await start_dispatcher(transformer_addr=transformer.addr, tracking_base_url="https://default.example")
    await submit([f"r@{domain}"], raw, account_id=account_id, mail_from=f"news@{sending}", track_clicks=True)

    [received] = await smtp_sink.handler.wait_for(1)
    assert f'href="https://track.{sending}/t/c/' in received.data.decode()
    assert await verifies(received, dns_server)
