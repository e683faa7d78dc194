"""The router's suppression check, end to end: a suppressed recipient gets a "suppressed" event and is not
delivered, while the other recipient of the same message is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from postwire.db.suppressions import SuppressionInfo, SuppressionMirror
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink


def _entry(address: str, reason: str, expires_at: datetime | None = None) -> SuppressionInfo:
    now = datetime.now(UTC)
    return SuppressionInfo("acct1", address, reason, "bounce", None, now, expires_at)


async def test_suppressed_recipient_is_skipped_and_the_other_delivered(
        start_dispatcher: Any, submit: Any, events: Any, js: JetStreamContext, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    mirror = SuppressionMirror(js)
    await mirror.put(_entry(f"gone@{domain}", "userunknown"))
    await mirror.put(_entry(f"was@{domain}", "mailboxfull", datetime.now(UTC) - timedelta(seconds=1)))
    await start_dispatcher()
    mid = await submit([f"Gone@{domain.upper()}", f"ok@{domain}", f"was@{domain}"], make_mime())

    delivered = await eventually(lambda: len(events.of("delivered")) == 2 and events.of("delivered"))
    assert sorted(e.recipient for e in delivered) == [f"ok@{domain}", f"was@{domain}"]  # expired: no block
    [ev] = events.of("suppressed")
    assert (ev.recipient, ev.reason, ev.message_id) == (f"Gone@{domain.upper()}", "userunknown", mid)
    assert list(ev.tags) == ["t1"]
    assert not smtp_sink.handler.for_rcpt(f"gone@{domain}")
    assert len(events.of("accepted")) == 3


async def test_a_message_to_suppressed_recipients_only_is_not_sent(
        start_dispatcher: Any, submit: Any, events: Any, js: JetStreamContext, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    await SuppressionMirror(js).put(_entry(f"gone@{domain}", "complaint"))
    await start_dispatcher()
    await submit([f"gone@{domain}"], make_mime())
    await submit([f"next@{domain}"], make_mime())
    [ev] = await eventually(lambda: events.of("suppressed"))
    await eventually(lambda: events.of("delivered"))
    assert ev.reason == "complaint"
    assert [r.rcpt_tos for r in smtp_sink.handler.received] == [[f"next@{domain}"]]
