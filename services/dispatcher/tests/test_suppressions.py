"""The router's suppression check, end to end: a suppressed recipient gets a "suppressed" event and is not
delivered, while the other recipient of the same message is."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from postwire.core.jetstream import jetstream
from postwire.db.suppressions import SuppressionInfo, SuppressionMirror
from postwire.dispatcher.suppressed import KeyFilter, SuppressionCheck
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


# --- the router's memory of the bucket (postwire.dispatcher.suppressed) ---------------------------------


async def _following(nc: Client, check_s: float = 60.0) -> tuple[SuppressionCheck, KeyFilter,
                                                                  asyncio.Task[None]]:
    keys = KeyFilter(nc.jetstream(), check_s=check_s)
    check = SuppressionCheck(SuppressionMirror(jetstream(nc)), ttl_s=0, keys=keys)
    task = asyncio.create_task(check.follow())
    await eventually(keys.current)
    return check, keys, task


async def test_a_suppression_added_while_routing_takes_effect_and_a_removal_too(
        nc: Client, js: JetStreamContext) -> None:
    mirror = SuppressionMirror(js)
    await mirror.put(_entry("old@example.com", "userunknown"))
    check, _, task = await _following(nc)
    try:
        assert await check.suppressed("acct1", ["old@example.com", "new@example.com"]) == {
            "old@example.com": "userunknown"}
        await mirror.put(_entry("New@Example.com", "complaint"))
        assert await eventually(lambda: check.suppressed("acct1", ["new@example.com"])) == {
            "new@example.com": "complaint"}
        assert await check.suppressed("acct2", ["new@example.com"]) == {}  # another account's list
        await mirror.delete("acct1", "old@example.com")
        await eventually(lambda: _none(check.suppressed("acct1", ["old@example.com"])))
    finally:
        task.cancel()


async def _none(found: Any) -> bool:
    return not await found


async def test_recipients_absent_from_the_bucket_cost_no_request(nc: Client, js: JetStreamContext) -> None:
    """The point of the filter: a message to unsuppressed addresses asks NATS nothing."""
    await SuppressionMirror(js).put(_entry("gone@example.com", "userunknown"))
    check, _, task = await _following(nc)
    try:
        sent = nc.stats["out_msgs"]
        for n in range(50):
            assert await check.suppressed("acct1", [f"user{n}@example.com", f"other{n}@example.org"]) == {}
        assert nc.stats["out_msgs"] == sent
        assert await check.suppressed("acct1", ["gone@example.com"]) == {"gone@example.com": "userunknown"}
        assert nc.stats["out_msgs"] > sent  # a key it holds is looked up: expiry and reason
    finally:
        task.cancel()


def test_a_filter_behind_the_bucket_is_not_trusted_until_it_catches_up() -> None:
    keys = KeyFilter(js=None, check_s=1)  # type: ignore[arg-type]  # only the bookkeeping
    assert not keys.current()  # nothing loaded yet: every recipient is looked up
    keys.apply(None)
    keys.check(last_seq=7)
    assert keys.current()  # the bucket's contents are in; the puts up to 7 may be on their way
    keys.check(last_seq=9)
    assert not keys.current()  # a period later the watch has still not reached 7: stale
    keys.apply(_kv_entry("acct1.abc", revision=9))
    keys.check(last_seq=9)
    assert keys.current() and keys.may_hold("acct1.abc") and not keys.may_hold("acct1.def")
    keys.apply(_kv_entry("acct1.abc", revision=10, operation="DEL"))
    assert not keys.may_hold("acct1.abc")


def _kv_entry(key: str, revision: int, operation: str | None = None) -> KeyValue.Entry:
    return KeyValue.Entry(bucket="SUPPRESSIONS", key=key, value=None, revision=revision, delta=None,
                          created=None, operation=operation)


async def test_a_filter_whose_watch_has_ended_is_not_trusted(nc: Client) -> None:
    """A stopped (or crashed) watch must not leave the router believing a set nothing updates."""
    _, keys, task = await _following(nc)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not keys.current()
