"""The weighted choice between lanes (postwire.dispatcher.lanes) and the lanes in a provider's budget."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from postwire.core.lanes import BULK, TRANSACTIONAL, default_stream, has_list_unsubscribe, parse_stream
from postwire.core.sendoptions import take_option_headers
from postwire.core.topology import INBOUND_FILTERS, inbound_subject, outbound_retry_subject, outbound_subject
from postwire.dispatcher.lanes import WeightedSlots
from postwire.dispatcher.shaping import load_rules
from postwire.dispatcher.smtp_pool import BULK_TURN, _Group
from postwire.dispatcher.throttle import Budget
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import Received, SmtpSink

from .test_traffic import gmail_like, metric, write_rules


async def _contend(slots: WeightedSlots, rounds: int) -> list[str]:
    """Both lanes always want a slot; each slot given is used and handed back at once. The order in which
    the lanes got them."""
    order: list[str] = []

    async def worker(lane: str) -> None:
        view = slots.lane(lane)
        while len(order) < rounds:
            n = await view.take(1)
            order.append(lane)
            await asyncio.sleep(0)
            await view.give(n)

    # more takers per lane than slots: each lane always has one waiting
    workers = [asyncio.create_task(worker(lane)) for lane in (TRANSACTIONAL, BULK) * 4]
    await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return order[:rounds]


async def test_both_lanes_progress_in_their_weights_under_load() -> None:
    slots = WeightedSlots(2, {TRANSACTIONAL: 8, BULK: 1})
    order = await _contend(slots, 900)
    tx, bulk = order.count(TRANSACTIONAL), order.count(BULK)
    assert bulk > 0 and tx > 0  # neither starves
    assert 7 <= tx / bulk <= 9
    # and bulk's turns are spread out: never more than 8 transactional ones in between, give or take one
    # in flight while the share is settling
    gaps, run = [], 0
    for lane in order:
        if lane == TRANSACTIONAL:
            run += 1
        else:
            gaps.append(run)
            run = 0
    assert max(gaps[1:]) <= 10


async def test_a_lane_alone_gets_every_slot() -> None:
    slots = WeightedSlots(4, {TRANSACTIONAL: 8, BULK: 1})
    bulk = slots.lane(BULK)
    assert await bulk.take(4) == 4  # nothing transactional waiting: bulk takes all there is
    waiter = asyncio.create_task(bulk.take(3))
    await asyncio.sleep(0)
    await bulk.give(2)
    assert await waiter == 2  # still bulk's, none held back for a lane that does not ask
    assert slots.free == 0


async def test_a_freed_slot_goes_to_the_waiting_transactional_lane_first() -> None:
    slots = WeightedSlots(1, {TRANSACTIONAL: 8, BULK: 1})
    assert await slots.lane(BULK).take(1) == 1
    bulk_waiting = asyncio.create_task(slots.lane(BULK).take(1))
    await asyncio.sleep(0)
    tx_waiting = asyncio.create_task(slots.lane(TRANSACTIONAL).take(1))  # came later, served first
    await asyncio.sleep(0)
    slots.give(BULK, 1)
    assert await tx_waiting == 1
    assert not bulk_waiting.done()
    slots.give(TRANSACTIONAL, 1)
    assert await bulk_waiting == 1


async def test_a_lane_back_from_idle_brings_no_credit() -> None:
    """Bulk alone for a long while, then transactional comes: bulk still gets its share at once, not
    after transactional has caught up on the slots it did not ask for."""
    slots = WeightedSlots(1, {TRANSACTIONAL: 8, BULK: 1})
    for _ in range(100):
        await slots.lane(BULK).take(1)
        slots.give(BULK, 1)
    order = await _contend(slots, 90)
    assert order[:20].count(BULK) >= 1


async def test_a_cancelled_taker_loses_nothing() -> None:
    slots = WeightedSlots(1)
    assert await slots.lane(TRANSACTIONAL).take(1) == 1
    waiting = asyncio.create_task(slots.lane(BULK).take(1))
    await asyncio.sleep(0)
    waiting.cancel()
    slots.give(TRANSACTIONAL, 1)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.free == 1


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError):
        WeightedSlots(1, {TRANSACTIONAL: 1, BULK: 0})


def test_transactional_mail_has_a_ready_queue_of_its_own() -> None:
    budget = Budget("default", "default:mx", load_rules(None).rule("default"), lambda b: None)
    while budget.admits(BULK):
        budget.enter(BULK)
    assert budget.ready == budget.max_ready
    assert budget.admits(TRANSACTIONAL)
    budget.enter(TRANSACTIONAL)
    assert not budget.admits(BULK)


async def test_sessions_coming_free_go_to_transactional_first_but_bulk_gets_its_turn() -> None:
    group = _Group()
    loop = asyncio.get_running_loop()
    woken: list[str] = []
    for lane in (BULK, TRANSACTIONAL):
        for _ in range(30):
            fut: asyncio.Future[None] = loop.create_future()
            fut.add_done_callback(lambda _f, lane=lane: woken.append(lane))
            group.waiters[lane].append(fut)
    for _ in range(27):
        group.wake()
    await asyncio.sleep(0)
    assert woken == ([TRANSACTIONAL] * BULK_TURN + [BULK]) * 3


def test_a_bulk_backlog_is_parked_at_the_budget_s_rate() -> None:
    """Parked bulk messages come back spread out one rate slot apart, not all after a few seconds."""
    budget = Budget("default", "default:mx", load_rules(None).rule("default"), lambda b: None)
    rate = budget.message_rate
    assert rate is not None
    delays = [budget.park_delay(now=1000.0, lane=BULK) for _ in range(10 * int(rate))]
    assert delays == sorted(delays)
    assert delays[-1] >= (len(delays) - 1) / rate  # ten seconds of the rate: about ten seconds away
    late = delays[len(delays) // 2:]  # past the first few seconds' jitter: exactly one slot apart
    assert all(b - a == pytest.approx(1 / rate) for a, b in itertools.pairwise(late))
    # one that came back too early, and transactional mail, get the usual few seconds
    assert budget.park_delay(now=1000.0, lane=BULK, waited=True) < delays[-1]
    assert budget.park_delay(now=1000.0, lane=TRANSACTIONAL) < 60


def test_stream_defaults_and_header() -> None:
    assert default_stream(1, False) == TRANSACTIONAL
    assert default_stream(2, False) == BULK
    assert default_stream(1, True) == BULK
    assert parse_stream(" Bulk ") == BULK and parse_stream("marketing") is None
    raw = b"From: a@example.com\r\nList-Unsubscribe: <mailto:u@example.com>\r\n\r\nbody\r\n"
    assert has_list_unsubscribe(raw)
    assert not has_list_unsubscribe(b"From: a@example.com\r\n\r\nList-Unsubscribe: <x>\r\n")
    content, found = take_option_headers(b"X-Postwire-Stream: bulk\r\nSubject: hi\r\n\r\nbody\r\n")
    assert found.stream == BULK and content == b"Subject: hi\r\n\r\nbody\r\n"
    _, found = take_option_headers(b"X-Postwire-Stream: newsletter\r\nSubject: hi\r\n\r\nbody\r\n")
    assert found.stream is None and found.problems


def test_lane_subjects_keep_transactional_where_it_was() -> None:
    assert outbound_subject(7) == outbound_subject(7, TRANSACTIONAL) == "outbound.007"
    assert outbound_subject(7, "") == "outbound.007"  # an envelope from before lanes
    assert outbound_subject(7, BULK) == "outbound.007.bulk"
    assert outbound_retry_subject(7, BULK) == "outbound.007.bulk.retry"
    assert outbound_retry_subject(7) == "outbound.007.retry"
    assert inbound_subject("acct", BULK) == "inbound.acct.bulk" and inbound_subject("acct") == "inbound.acct"
    assert INBOUND_FILTERS == {TRANSACTIONAL: "inbound.*", BULK: "inbound.*.bulk"}


# ----------------------------------------------------------------------------------- the real system


def _rcpt_of(r: Received) -> str:
    return r.rcpt_tos[0].lower()


@pytest.mark.slow
async def test_transactional_mail_overtakes_a_bulk_backlog_to_the_same_provider(
        start_dispatcher: Any, submit: Any, dns_server: DnsServer, smtp_sink: SmtpSink, tmp_path: Path,
        make_mime: Any) -> None:
    """One provider shaped to 10/s on one connection; a bulk backlog queued before the dispatcher starts
    (20 s of work), and more bulk mail arriving three times as fast as the provider takes it, so its
    ready queue stays full of bulk. Transactional messages to the same provider, sent one at a time,
    each arrive after at most the few bulk messages already holding the connection or its next rate
    slots (sent as bulk, one waits in the full queue or is parked behind the backlog); bulk keeps going
    meanwhile and after. Counts, not time."""
    rules = write_rules(tmp_path, {"slowlike": {"match": ["*.gmail-like.test"], "max_connections": 1,
                                                "message_rate": "10/s"}})
    [domain] = gmail_like(1, dns_server)
    n_backlog, n_tx = 200, 3
    for i in range(n_backlog):
        await submit([f"bulk{i}@{domain}"], make_mime(f"<p>{i}</p>"), stream=BULK)
    await start_dispatcher(shaping_file=rules)

    def delivered(prefix: str) -> list[str]:
        return [_rcpt_of(r) for r in smtp_sink.handler.received if _rcpt_of(r).startswith(prefix)]

    async def more_bulk() -> int:
        sent = 0
        while True:  # runs until cancelled below
            await submit([f"bulk-more{sent}@{domain}"], make_mime(f"<p>more {sent}</p>"), stream=BULK)
            sent += 1
            await asyncio.sleep(1 / 30)

    await eventually(lambda: len(delivered("bulk")) >= 20, timeout=60)  # the backlog is being worked on
    feeder = asyncio.create_task(more_bulk())
    await eventually(lambda: len(delivered("bulk-more")) >= 1, timeout=60)
    overtaken = []
    try:
        for i in range(n_tx):
            before = len(delivered("bulk"))
            await submit([f"tx{i}@{domain}"], make_mime(f"<p>tx {i}</p>"), stream=TRANSACTIONAL)
            await eventually(lambda i=i: f"tx{i}@{domain}" in delivered("tx"), timeout=60)
            overtaken.append(len(delivered("bulk")) - before)
    finally:
        feeder.cancel()
    bulk_at_tx = len(delivered("bulk"))
    print(f"lanes: bulk messages delivered while each transactional one was on its way: {overtaken}; "
          f"{bulk_at_tx} bulk delivered after the last")
    assert max(overtaken) <= 3
    assert bulk_at_tx <= n_backlog - 100  # the backlog was far from drained
    # bulk was not stopped for them: it keeps going
    await eventually(lambda: len(delivered("bulk")) >= bulk_at_tx + 20, timeout=60)
    assert len(set(delivered("bulk"))) == len(delivered("bulk"))  # each once
    assert smtp_sink.max_connections <= 1
    assert metric("postwire_dispatcher_lane_messages_total", lane=TRANSACTIONAL, outcome="delivered") >= n_tx
    assert metric("postwire_dispatcher_lane_queue_seconds_count", lane=BULK) >= 40
