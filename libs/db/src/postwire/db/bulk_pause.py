"""Pausing an account's bulk lane when its complaints pass its threshold, and resuming it (a person's
decision). docs/delivery.md, "Pausing bulk mail on complaints".

The state is two columns of ``accounts`` (migration 0018): ``pause_bulk_at_complaint_rate`` (the 24-hour
complaint rate that pauses, None = never; 0.003 by default) and ``bulk_paused_at`` (None while bulk mail
flows). The recorder's rates job pauses (:func:`pause`), the API and the CLI resume (:func:`resume`); the
dispatcher's router reads :func:`paused_accounts` now and then and holds the bulk mail of the accounts it
names. Each change is announced by a ``bulk_paused`` / ``bulk_resumed`` event (so webhooks fire),
published inside the transaction that makes it: when the publish fails the change is rolled back and
tried again, so a change is never made without its event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core.events import make_event
from postwire.db.models import Account
from postwire.v1 import envelope_pb2

PAUSED: str = "bulk_paused"
RESUMED: str = "bulk_resumed"
# an account's setting when none is given: 0.3 %, the rate Gmail and Yahoo hold bulk senders to
DEFAULT_THRESHOLD = Decimal("0.003")
# below this many deliveries in the window a rate says little: no pause (and no alert, in the chart)
MIN_DELIVERED = 100

Publish = Callable[[envelope_pb2.Event], Awaitable[None]]


def account_event(kind: str, account_id: str, at: datetime, reason: str) -> envelope_pb2.Event:
    """A ``bulk_paused`` or ``bulk_resumed`` event: of the account, no message and no recipient; its id
    names the moment of the change, so publishing it again is deduplicated."""
    ev = make_event(kind, account_id=account_id, message_id="", recipient="", reason=reason)
    ev.event_id = f"{account_id}.{kind}.{int(at.timestamp() * 1_000_000)}"
    ev.at.FromDatetime(at.astimezone(UTC).replace(tzinfo=None))
    return ev


def should_pause(threshold: Decimal | None, delivered: int, complained: int,
                 min_delivered: int = MIN_DELIVERED) -> bool:
    """Whether ``complained`` of ``delivered`` reaches ``threshold`` (None: never), with enough volume."""
    if threshold is None or delivered < max(1, min_delivered):
        return False
    return Decimal(complained) / Decimal(delivered) >= threshold


async def thresholds(session: AsyncSession) -> dict[str, Decimal | None]:
    """The threshold of every account whose bulk lane is not paused."""
    rows = await session.execute(select(Account.id, Account.pause_bulk_at_complaint_rate)
                                 .where(Account.bulk_paused_at.is_(None)))
    return {a: t for a, t in rows.all()}


async def pause(session: AsyncSession, account_id: str, reason: str, publish: Publish) -> datetime | None:
    """Pause the account's bulk lane and publish ``bulk_paused``, then commit; the time it was paused,
    or None when it already was."""
    now = datetime.now(UTC)
    paused: datetime | None = await session.scalar(update(Account).where(Account.id == account_id,
                                                        Account.bulk_paused_at.is_(None))
                                  .values(bulk_paused_at=now).returning(Account.bulk_paused_at))
    if paused is None:
        await session.rollback()
        return None
    await publish(account_event(PAUSED, account_id, paused, reason))
    await session.commit()
    return paused


async def resume(session: AsyncSession, account_id: str, reason: str, publish: Publish) -> datetime | None:
    """Resume the account's bulk lane and publish ``bulk_resumed``, then commit; when it had been
    paused, or None when it was not paused."""
    was: datetime | None = await session.scalar(select(Account.bulk_paused_at).where(Account.id == account_id)
                               .with_for_update())
    if was is None:
        await session.rollback()
        return None
    await session.execute(update(Account).where(Account.id == account_id).values(bulk_paused_at=None))
    await publish(account_event(RESUMED, account_id, datetime.now(UTC), reason))
    await session.commit()
    return was


async def paused_accounts(session: AsyncSession) -> set[str]:
    """The accounts whose bulk lane is paused (a handful of rows at most)."""
    return set((await session.scalars(select(Account.id).where(Account.bulk_paused_at.is_not(None)))).all())


async def pause_state(session: AsyncSession, account_id: str) -> tuple[Decimal | None, datetime | None]:
    """(threshold, paused at) of the account."""
    row = (await session.execute(select(Account.pause_bulk_at_complaint_rate, Account.bulk_paused_at)
                                 .where(Account.id == account_id))).one()
    return row[0], row[1]


async def set_threshold(session: AsyncSession, account_id: str, threshold: Decimal | None) -> None:
    """The account's pause threshold: a fraction in (0, 1], or None to never pause automatically."""
    if threshold is not None and not Decimal(0) < threshold <= Decimal(1):
        raise ValueError("the complaint rate that pauses bulk mail must be above 0 and at most 100 %")
    await session.execute(update(Account).where(Account.id == account_id)
                          .values(pause_bulk_at_complaint_rate=threshold))
