"""Bounce and complaint rates of every sending account as gauges, and the automatic pause of an account's
bulk lane when its complaints pass its threshold (docs/metrics.md, docs/delivery.md).

Once a minute (POSTWIRE_RATES_SAMPLE_S) one recorder replica (the holder of the ``account-rates`` lease,
postwire.core.leader) reads from PostgreSQL, for every account with deliveries in the last two UTC days,
its 24-hour outcomes in all and per sending domain (postwire.db.events_query.all_rates: whole days from
event_counts, the rest from the events) and sets the gauges: a scrape reads memory, never the database.
A replica without the lease exports no rate series, so nothing is counted twice over the pods.

Then, for each account whose bulk lane is not paused and whose own threshold is set: when its 24-hour
complaint rate (all its mail) has reached the threshold with at least POSTWIRE_RATES_MIN_DELIVERED
deliveries, the lane is paused and ``bulk_paused`` published (postwire.db.bulk_pause). Nothing resumes it
but a person.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import nats.errors
import structlog
from nats.js import JetStreamContext
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.events import publish_event
from postwire.core.leader import LeaderLease
from postwire.db import bulk_pause
from postwire.db.events_query import DomainRates, all_rates
from postwire.db.models import Account
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

JOB = "account-rates"
WINDOW = timedelta(hours=24)
ALL_DOMAINS = "*"  # the ``domain`` label of an account's whole mail


@dataclass(frozen=True)
class RateGauges:
    complaint: Gauge
    bounce: Gauge
    delivered: Gauge
    paused: Gauge

    @classmethod
    def on(cls, registry: CollectorRegistry) -> RateGauges:
        labels = ["account", "domain"]
        return cls(
            Gauge("postwire_account_complaint_ratio",
                  "Complaints per delivered message over the last 24 hours, per account and sending domain "
                  "(domain=\"*\": all the account's mail); sampled every minute by one recorder replica.",
                  labels, registry=registry),
            Gauge("postwire_account_bounce_ratio",
                  "Failed and bounced recipients per attempted (delivered or failed) over the last 24 hours, "
                  "per account and sending domain; sampled every minute by one recorder replica.",
                  labels, registry=registry),
            Gauge("postwire_account_delivered_messages",
                  "Delivered recipients over the last 24 hours, per account and sending domain: the volume "
                  "behind the rates; sampled every minute by one recorder replica.",
                  labels, registry=registry),
            Gauge("postwire_account_bulk_paused",
                  "1 while the account's bulk lane is paused (automatically, on complaints), else 0; for "
                  "the accounts with deliveries in the last two days.", ["account"], registry=registry))

    def clear(self) -> None:
        for gauge in (self.complaint, self.bounce, self.delivered, self.paused):
            gauge.clear()


GAUGES = RateGauges.on(REGISTRY)


@dataclass(frozen=True)
class _AccountRow:
    name: str
    threshold: Decimal | None
    paused: bool


async def _accounts(session: AsyncSession, ids: set[str]) -> dict[str, _AccountRow]:
    rows = await session.execute(select(Account.id, Account.name, Account.pause_bulk_at_complaint_rate,
                                        Account.bulk_paused_at).where(Account.id.in_(sorted(ids))))
    return {i: _AccountRow(n, t, p is not None) for i, n, t, p in rows.all()}


def _set(gauges: RateGauges, found: list[DomainRates], accounts: dict[str, _AccountRow]) -> None:
    """The gauges as of ``found``: series of senders no longer active are removed, the rest set."""
    wanted: set[tuple[str, ...]] = set()
    for r in found:
        account = accounts.get(r.account_id)
        if account is None:  # deleted meanwhile
            continue
        series = (account.name, r.domain or ALL_DOMAINS)
        wanted.add(series)
        gauges.complaint.labels(*series).set(r.rates.complaint_rate or 0.0)
        gauges.bounce.labels(*series).set(r.rates.bounce_rate or 0.0)
        gauges.delivered.labels(*series).set(r.rates.delivered)
    for gauge in (gauges.complaint, gauges.bounce, gauges.delivered):
        for stale in [key for key in _label_sets(gauge) if key not in wanted]:
            gauge.remove(*stale)
    names = {a.name for a in accounts.values()}
    for (name,) in [key for key in _label_sets(gauges.paused) if key[0] not in names]:
        gauges.paused.remove(name)
    for account in accounts.values():
        gauges.paused.labels(account.name).set(1 if account.paused else 0)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return [tuple(s.labels[n] for n in gauge._labelnames) for m in gauge.collect() for s in m.samples]


async def sample(js: JetStreamContext, sessions: async_sessionmaker[AsyncSession],
                 gauges: RateGauges = GAUGES, min_delivered: int = bulk_pause.MIN_DELIVERED) -> list[str]:
    """One round: the gauges, then the pauses; the ids of the accounts paused in this round."""
    async with sessions() as s:
        found = await all_rates(s, WINDOW)
        accounts = await _accounts(s, {r.account_id for r in found})
    _set(gauges, found, accounts)

    async def publish(ev: envelope_pb2.Event) -> None:
        await publish_event(js, ev)

    paused = []
    for r in found:
        account = accounts.get(r.account_id)
        if r.domain or account is None or account.paused:
            continue
        rates = r.rates
        if not bulk_pause.should_pause(account.threshold, rates.delivered, rates.complained, min_delivered):
            continue
        reason = (f"complaint rate {r.rates.complaint_rate or 0:.3%} over 24 h ({r.rates.complained} of "
                  f"{r.rates.delivered} delivered) reached {account.threshold or 0:.3%}")
        async with sessions() as s:
            if await bulk_pause.pause(s, r.account_id, reason, publish) is not None:
                paused.append(r.account_id)
                gauges.paused.labels(account.name).set(1)
                log.warning("rates.bulk_paused", account_id=r.account_id, account=account.name, reason=reason)
    return paused


async def run_sampler(js: JetStreamContext, sessions: async_sessionmaker[AsyncSession], lease: LeaderLease,
                      interval_s: float, stop: asyncio.Event, gauges: RateGauges = GAUGES,
                      min_delivered: int = bulk_pause.MIN_DELIVERED) -> None:
    """Every ``interval_s`` while holding the lease: :func:`sample`. Without it: no series."""
    try:
        while not stop.is_set():
            if await lease.hold():
                try:
                    await sample(js, sessions, gauges, min_delivered)
                except (DBAPIError, OperationalError, nats.errors.Error, OSError, TimeoutError) as e:
                    log.warning("rates.unavailable", error=str(e) or type(e).__name__)
            else:
                gauges.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        gauges.clear()
        await lease.release()
