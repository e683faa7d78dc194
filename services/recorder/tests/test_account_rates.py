"""Bounce and complaint rates over 1 h / 24 h / 7 days (postwire.db.events_query.rates), the recorder's
gauges of them, and the automatic pause of an account's bulk lane, against real PostgreSQL and NATS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry
from sqlalchemy import select, update

from postwire.core.events import make_event
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import EVENTS, event_subject
from postwire.db import bulk_pause
from postwire.db.accounts import create_account
from postwire.db.events_query import rates
from postwire.db.models import Account
from postwire.recorder import account_rates
from postwire.recorder.recorder import record_batch
from postwire.v1 import envelope_pb2

NOW = datetime.now(UTC)


def _message(account: str, at: datetime, outcome: str, sender: str = "news@shop.test",
             complained: bool = False) -> list[envelope_pb2.Event]:
    """One recipient's accepted event and its outcome (delivered, failed or bounced) at ``at``, and a
    complaint a minute later when asked."""
    mid, rcpt = new_message_id(), f"r{new_id()[-8:]}@example.test"

    def ev(type_: str, when: datetime, **fields: Any) -> envelope_pb2.Event:
        e = make_event(type_, account_id=account, message_id=mid, recipient=rcpt, **fields)
        e.at.FromDatetime(when.replace(tzinfo=None))
        return e

    out = [ev("accepted", at - timedelta(seconds=5), subject="Hi", mail_from=sender)]
    if outcome == "bounced":  # an asynchronous bounce follows a delivery
        out += [ev("delivered", at - timedelta(seconds=2), smtp_code=250),
                ev("bounced", at, reason="userunknown", hardbounce=True)]
    elif outcome == "failed":
        out.append(ev("failed", at, reason="mailboxfull", smtp_code=552))
    else:
        out.append(ev("delivered", at, smtp_code=250))
    if complained:
        out.append(ev("complained", at + timedelta(minutes=1), feedback_type="abuse"))
    return out


async def test_rates_count_each_window_and_the_sending_domain(sessions: Any) -> None:
    account, other = new_id("a"), new_id("a")
    events: list[envelope_pb2.Event] = []
    # 30 minutes ago (in every window): 4 delivered from shop.test, one of them complained; one failed
    for i in range(4):
        events += _message(account, NOW - timedelta(minutes=30), "delivered", complained=i == 0)
    events += _message(account, NOW - timedelta(minutes=30), "failed")
    # 5 hours ago (24 h and 7 d): 2 delivered from other.test, one bounced afterwards
    events += _message(account, NOW - timedelta(hours=5), "delivered", sender="a@other.test")
    events += _message(account, NOW - timedelta(hours=5), "bounced", sender="a@other.test")
    # 3 days ago (7 d only): 3 delivered, 1 complained
    for i in range(3):
        events += _message(account, NOW - timedelta(days=3), "delivered", complained=i == 0)
    # 8 days ago: in no window
    for _ in range(5):
        events += _message(account, NOW - timedelta(days=8), "failed", complained=True)
    # another account's mail never counts
    for _ in range(3):
        events += _message(other, NOW - timedelta(minutes=30), "failed", complained=True)
    await record_batch(sessions, events)

    async with sessions() as s:
        found = await rates(s, account, now=NOW + timedelta(minutes=2))
        shop = await rates(s, account, "SHOP.test", now=NOW + timedelta(minutes=2))
        elsewhere = await rates(s, account, "nowhere.test", now=NOW + timedelta(minutes=2))
    assert found["1h"].json() == {"delivered": 4, "attempted": 5, "bounced": 1, "complained": 1,
                                  "bounce_rate": 1 / 5, "complaint_rate": 1 / 4}
    assert found["24h"].json() == {"delivered": 6, "attempted": 7, "bounced": 2, "complained": 1,
                                   "bounce_rate": 2 / 7, "complaint_rate": 1 / 6}
    assert found["7d"].json() == {"delivered": 9, "attempted": 10, "bounced": 2, "complained": 2,
                                  "bounce_rate": 2 / 10, "complaint_rate": 2 / 9}
    assert shop["24h"].json() == {"delivered": 4, "attempted": 5, "bounced": 1, "complained": 1,
                                  "bounce_rate": 1 / 5, "complaint_rate": 1 / 4}
    assert shop["7d"].complained == 2 and shop["7d"].delivered == 7
    assert elsewhere["7d"].json() == {"delivered": 0, "attempted": 0, "bounced": 0, "complained": 0,
                                      "bounce_rate": None, "complaint_rate": None}


async def _account(sessions: Any, threshold: Decimal | None = bulk_pause.DEFAULT_THRESHOLD,
                   ) -> tuple[str, str]:
    name = f"rates-{new_id()[-8:]}"
    async with sessions.begin() as s:
        creds = await create_account(s, name)
        await s.execute(update(Account).where(Account.id == creds.account_id)
                        .values(pause_bulk_at_complaint_rate=threshold))
    return creds.account_id, name


async def _mail(sessions: Any, account: str, delivered: int, complaints: int) -> None:
    events: list[envelope_pb2.Event] = []
    for i in range(delivered):
        events += _message(account, NOW - timedelta(hours=2), "delivered", complained=i < complaints)
    await record_batch(sessions, events)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_gauges_and_an_account_crossing_its_threshold_is_paused_once(sessions: Any,
                                                                          js: JetStreamContext) -> None:
    hot, hot_name = await _account(sessions)
    calm, calm_name = await _account(sessions)
    never, _ = await _account(sessions, threshold=None)
    small, _ = await _account(sessions)
    await _mail(sessions, hot, 200, 1)  # 0.5 %
    await _mail(sessions, calm, 1000, 2)  # 0.2 %
    await _mail(sessions, never, 200, 5)  # 2.5 %, but it never pauses
    await _mail(sessions, small, 50, 1)  # 2 %, too few deliveries to judge
    registry = CollectorRegistry()
    gauges = account_rates.RateGauges.on(registry)

    paused = await account_rates.sample(js, sessions, gauges, min_delivered=100)

    mine = {hot, calm, never, small}
    assert [a for a in paused if a in mine] == [hot]
    assert _value(registry, "postwire_account_complaint_ratio", account=hot_name, domain="*") == 1 / 200
    assert _value(registry, "postwire_account_complaint_ratio", account=calm_name,
                  domain="shop.test") == 0.002
    assert _value(registry, "postwire_account_delivered_messages", account=calm_name, domain="*") == 1000
    assert _value(registry, "postwire_account_bounce_ratio", account=calm_name, domain="*") == 0.0
    assert _value(registry, "postwire_account_bulk_paused", account=hot_name) == 1
    assert _value(registry, "postwire_account_bulk_paused", account=calm_name) == 0
    async with sessions() as s:
        states = dict((await s.execute(select(Account.id, Account.bulk_paused_at)
                                       .where(Account.id.in_(mine)))).all())
    assert states[hot] is not None
    assert states[calm] is None and states[never] is None and states[small] is None
    stored = await js.get_last_msg(EVENTS, event_subject(hot, bulk_pause.PAUSED))
    ev = envelope_pb2.Event.FromString(stored.data)
    assert ev.type == "bulk_paused" and ev.account_id == hot and "0.500%" in ev.reason

    # the next round finds it paused already: no second pause, no second event
    assert hot not in await account_rates.sample(js, sessions, gauges, min_delivered=100)
    info = await js.stream_info(EVENTS, subjects_filter=event_subject(hot, bulk_pause.PAUSED))
    assert info.state.messages == 1

    async def publish(e: envelope_pb2.Event) -> None:
        await js.publish(*_subject_payload(e))

    async with sessions() as s:
        assert await bulk_pause.resume(s, hot, "test", publish) == states[hot]
    resumed = envelope_pb2.Event.FromString(
        (await js.get_last_msg(EVENTS, event_subject(hot, bulk_pause.RESUMED))).data)
    assert resumed.type == "bulk_resumed"
    async with sessions() as s:
        assert await bulk_pause.resume(s, hot, "again", publish) is None  # not paused: nothing happens


def _subject_payload(ev: envelope_pb2.Event) -> tuple[str, bytes]:
    return event_subject(ev.account_id, ev.type), ev.SerializeToString()
