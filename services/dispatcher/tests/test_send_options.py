"""Per-message options end to end through the dispatcher: maxdelivertime, trackbounces, per-recipient
message ids (/v1/send), RFC 3461 parameters passed on, and the resend archive."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from postwire.core import archive
from postwire.core.ids import new_message_id
from postwire.dispatcher.smtp_client import DsnParams, xtext
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink
from postwire.v1 import envelope_pb2

PLAIN = (b"From: sender@example.org\r\nTo: rcpt@example.test\r\nSubject: Options\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello\r\n")


async def test_past_maxdelivertime_fails_as_expired_without_an_attempt(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str) -> None:
    dns_server.add_mail_domain(domain)
    rcpt = f"late@{domain}"
    await start_dispatcher()
    await submit([rcpt], PLAIN, max_deliver_time=datetime.now(UTC) - timedelta(minutes=1))

    [failed] = await eventually(lambda: events.of("failed", rcpt))
    assert (failed.reason, failed.enhanced_status, failed.hardbounce) == ("expired", "4.4.7", False)
    assert smtp_sink.handler.rcpt_attempts[rcpt] == 0
    assert not events.of("delivered", rcpt)


async def test_deferral_past_maxdelivertime_expires_before_the_default_window(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str) -> None:
    """The message's own deadline, seconds away, wins over the one-day default lifetime."""
    dns_server.add_mail_domain(domain)
    rcpt = f"busy@{domain}"
    smtp_sink.handler.script(rcpt, *["451 4.2.0 try later"] * 50)
    await start_dispatcher()
    await submit([rcpt], PLAIN, max_deliver_time=datetime.now(UTC) + timedelta(seconds=2))

    [failed] = await eventually(lambda: events.of("failed", rcpt), timeout=30)
    assert failed.reason == "expired"
    assert events.of("deferred", rcpt)  # it was tried, and retried, until the deadline


async def test_untracked_bounces_keep_the_customers_envelope_sender(
        start_dispatcher: Any, submit: Any, dns_server: DnsServer, smtp_sink: SmtpSink, domain: str) -> None:
    dns_server.add_mail_domain(domain)
    tracked, untracked = f"a@{domain}", f"b@{domain}"
    await start_dispatcher()
    await submit([tracked], PLAIN, mail_from="owner@example.org")
    await submit([untracked], PLAIN, mail_from="owner@example.org", track_bounces=False)

    await smtp_sink.handler.wait_for(2)
    assert smtp_sink.handler.for_rcpt(tracked)[0].mail_from.startswith("pw1-")
    assert smtp_sink.handler.for_rcpt(untracked)[0].mail_from == "owner@example.org"


async def test_recipients_keep_their_own_message_ids(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str, js: JetStreamContext) -> None:
    dns_server.add_mail_domain(domain)
    first, second = f"first@{domain}", f"second@{domain}"
    second_id = new_message_id()
    await start_dispatcher()
    mid = await submit([first, second], PLAIN, recipient_ids={second: second_id})

    delivered = await eventually(lambda: events.of("delivered") if len(events.of("delivered")) == 2 else [])
    assert {(e.recipient, e.message_id) for e in delivered} == {(first, mid), (second, second_id)}
    assert {(e.recipient, e.message_id) for e in events.of("accepted")} == {(first, mid), (second, second_id)}

    # both ids can be resent: the alias narrows the archived message to its recipient
    whole = await eventually(lambda: archive.load(js, mid))
    assert whole is not None and list(whole.recipients) == [first, second]
    alias = await archive.load(js, second_id)
    assert alias is not None and list(alias.recipients) == [second] and alias.message_id == second_id
    assert alias.body.size == whole.body.size
    assert await archive.load(js, new_message_id()) is None


class DsnPeer:
    """A minimal SMTP server that offers DSN and records the commands it gets (aiosmtpd refuses DSN
    parameters, so the sink cannot stand in for a Postfix next hop here)."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer ESMTP\r\n")
        while line := await reader.readline():
            cmd = line.decode().rstrip("\r\n")
            self.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                writer.write(b"250-peer\r\n250-DSN\r\n250 8BITMIME\r\n")
            elif verb == "DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                while (await reader.readline()) != b".\r\n":
                    pass
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


async def test_dsn_parameters_reach_a_next_hop_that_offers_dsn(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, domain: str) -> None:
    """With the customer's own envelope sender the next hop reports to them, so it gets the parameters."""
    dns_server.add_mail_domain(domain)
    rcpt = f"dsn@{domain}"
    peer = DsnPeer()
    await peer.start()
    try:
        await start_dispatcher(mx_port=peer.port)
        await submit([rcpt], PLAIN, mail_from="owner@example.org", track_bounces=False,
                     dsn=envelope_pb2.Dsn(ret="HDRS", envid="batch 7+x"),
                     recipient_dsn={rcpt: envelope_pb2.RecipientDsn(notify=["FAILURE", "DELAY"],
                                                                     orcpt=f"rfc822;{rcpt}")})
        await eventually(lambda: events.of("delivered", rcpt))
    finally:
        await peer.stop()
    mail = next(c for c in peer.commands if c.upper().startswith("MAIL FROM"))
    rcpt_cmd = next(c for c in peer.commands if c.upper().startswith("RCPT TO"))
    assert mail == "MAIL FROM:<owner@example.org> RET=HDRS ENVID=batch+207+2Bx"
    assert rcpt_cmd == f"RCPT TO:<{rcpt}> NOTIFY=FAILURE,DELAY ORCPT=rfc822;{rcpt}"


def test_xtext_encodes_plus_equals_space_and_non_ascii() -> None:
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext("é") == "+C3+A9"
    assert DsnParams(notify=("NEVER",)).rcpt_options() == ["NOTIFY=NEVER"]
    assert DsnParams(ret="bogus").mail_options() == []
