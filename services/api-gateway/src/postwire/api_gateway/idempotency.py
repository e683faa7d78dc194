"""Idempotency-Key: a retried request gets the first answer instead of sending the message twice.

Design (follows the IETF httpapi "Idempotency-Key" draft: 409 while in flight, 422 on reuse):

1. Before sending, the request *reserves* ``(account, key)`` with ``INSERT … ON CONFLICT DO NOTHING``:
   a row with ``status_code = 0`` (pending), the request's SHA-256 fingerprint and the message id it
   will use. PostgreSQL's primary key makes exactly one of two concurrent requests the owner.
2. The loser reads the row: a different fingerprint → 422 ``idempotency_key_reused``; a finished row →
   the stored status and body are replayed (header ``Idempotent-Replayed: true``); a pending row → 409
   ``idempotency_key_in_progress`` with Retry-After, so a client never waits on a lock.
3. The owner publishes, then stores the answer (``status_code = 202``); only successful answers are
   remembered. If the request turns out invalid (422/413, nothing sent) the reservation is deleted so
   a corrected retry may reuse the key. If the publish is not confirmed (503) the reservation is kept
   with its lease ended: the retry takes it over at once (step 4) and publishes under the same id.
4. A process that dies between reserving and finishing leaves a pending row. After
   ``idempotency_lease_s`` a retry *takes it over* and reuses the message id stored in it. That id is
   the JetStream ``Nats-Msg-Id``, so if the dead process had in fact published, the re-publish is
   dropped by the stream's duplicate window (120 s; the lease is shorter) instead of sending twice.
   The same holds if the owner is merely slow and two owners briefly overlap: both publish the same id.
5. A key lives ``idempotency_ttl_s`` (24 h by default) from its reservation. After that it is free: the
   reserving INSERT takes the old row over as if it did not exist (a new request, a new message id), and
   :func:`run_purger` deletes expired rows in batches. The lifetime must outlast the lease (checked at
   start), so a key never expires while its request may still be publishing.

Why not derive the message id from ``hash(account, key)`` alone: ids are time-ordered ULIDs that sort
the message list, and JetStream dedupe only lasts two minutes, so the database row is needed anyway;
keeping the id *in* the row gives the same dedupe while keeping ids uniform.

``created_at`` starts both the key's lifetime and a pending row's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway import metrics
from postwire.api_gateway.errors import ApiError, InvalidInput
from postwire.db.models import IdempotencyKey

log = structlog.get_logger(__name__)

PENDING = 0
HEADER = "Idempotency-Key"
PURGE_BATCH = 5000


@dataclass(frozen=True)
class Reserved:
    """This request owns the key and must send ``message_id``."""

    message_id: str


@dataclass(frozen=True)
class Replay:
    """The key's first request already finished: answer this."""

    status_code: int
    body: dict[str, Any]


def fingerprint(*parts: bytes) -> str:
    """SHA-256 over the parts, length-prefixed so two different splits never collide."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise InvalidInput(("header", HEADER), "must be 1-255 printable ASCII characters", "invalid_key")
    return key


class IdempotencyStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], lease_s: float,
                 ttl_s: float = 86400.0) -> None:
        self._sessions = sessions
        self._lease = timedelta(seconds=lease_s)
        self._ttl = timedelta(seconds=ttl_s)

    async def reserve(self, account_id: str, key: str, request_hash: str,
                      new_message_id: str) -> Reserved | Replay:
        """Own the key (fresh or taken over) or get the stored answer; raises 409/422 :class:`ApiError`."""
        for _ in range(3):  # the row may vanish between our INSERT and SELECT (a failed owner released it)
            async with self._sessions.begin() as s:
                if await self._insert(s, account_id, key, request_hash, new_message_id):
                    return Reserved(new_message_id)
                taken = await self._take_over(s, account_id, key, request_hash)
                if taken is not None:
                    return Reserved(taken)
                row = await s.get(IdempotencyKey, (account_id, key))
            if row is not None:
                return self._existing(row, request_hash)
        raise _in_progress()

    async def _insert(self, s: AsyncSession, account_id: str, key: str, request_hash: str,
                      message_id: str) -> bool:
        """A new reservation; an expired row of the key is replaced as if it were not there."""
        new = insert(IdempotencyKey).values(
            account_id=account_id, key=key, request_hash=request_hash, status_code=PENDING,
            response={"id": message_id},
        )
        stmt = new.on_conflict_do_update(
            index_elements=[IdempotencyKey.account_id, IdempotencyKey.key],
            set_={"request_hash": new.excluded.request_hash, "status_code": PENDING,
                  "response": new.excluded.response, "created_at": func.now()},
            where=IdempotencyKey.created_at < func.now() - self._ttl,
        ).returning(IdempotencyKey.key)
        return (await s.execute(stmt)).first() is not None

    async def _take_over(self, s: AsyncSession, account_id: str, key: str, request_hash: str) -> str | None:
        """Claim a pending reservation whose lease ran out; returns the message id it reserved."""
        stmt = (update(IdempotencyKey)
                .where(IdempotencyKey.account_id == account_id, IdempotencyKey.key == key,
                       IdempotencyKey.status_code == PENDING, IdempotencyKey.request_hash == request_hash,
                       IdempotencyKey.created_at < func.now() - self._lease)
                .values(created_at=func.now()).returning(IdempotencyKey.response))
        row = (await s.execute(stmt)).first()
        return str(row[0]["id"]) if row is not None else None

    @staticmethod
    def _existing(row: IdempotencyKey, request_hash: str) -> Replay:
        if row.request_hash != request_hash:
            metrics.REJECTED.labels("idempotency_conflict").inc()
            raise ApiError(422, "idempotency_key_reused", f"this {HEADER} was already used for a "
                           "different request; use a new key for a new message")
        if row.status_code == PENDING:
            raise _in_progress()
        metrics.REPLAYS.inc()
        return Replay(row.status_code, row.response)

    async def complete(self, account_id: str, key: str, status_code: int, body: dict[str, Any]) -> None:
        async with self._sessions.begin() as s:
            await s.execute(update(IdempotencyKey)
                            .where(IdempotencyKey.account_id == account_id, IdempotencyKey.key == key)
                            .values(status_code=status_code, response=body))

    async def forget(self, account_id: str, key: str) -> None:
        """The request was invalid (nothing sent): drop the reservation so a corrected retry may use it."""
        async with self._sessions.begin() as s:
            await s.execute(delete(IdempotencyKey).where(
                IdempotencyKey.account_id == account_id, IdempotencyKey.key == key,
                IdempotencyKey.status_code == PENDING))

    async def expire(self, account_id: str, key: str) -> None:
        """The publish was not confirmed, yet it may have landed: keep the reservation (and its message
        id) but end its lease, so the client's retry takes it over at once and re-publishes under the
        same Nats-Msg-Id, which JetStream deduplicates if the first attempt did get through. Moved back
        by one lease only: the key itself must not expire (that would give the retry a new id)."""
        async with self._sessions.begin() as s:
            await s.execute(update(IdempotencyKey).where(
                IdempotencyKey.account_id == account_id, IdempotencyKey.key == key,
                IdempotencyKey.status_code == PENDING,
            ).values(created_at=IdempotencyKey.created_at - self._lease))

    async def purge(self, batch: int = PURGE_BATCH) -> int:
        """Delete expired keys, ``batch`` rows per transaction (rows another replica is deleting are
        skipped, not waited for); returns how many."""
        total = 0
        while True:
            expired = (select(IdempotencyKey.account_id, IdempotencyKey.key)
                       .where(IdempotencyKey.created_at < func.now() - self._ttl)
                       .limit(batch).with_for_update(skip_locked=True))
            async with self._sessions.begin() as s:
                result = await s.execute(
                    delete(IdempotencyKey).where(tuple_(IdempotencyKey.account_id, IdempotencyKey.key)
                                                 .in_(expired)).execution_options(synchronize_session=False))
            deleted = int(getattr(result, "rowcount", 0) or 0)
            total += deleted
            if deleted < batch:
                return total


async def run_purger(store: IdempotencyStore, interval_s: float, stop: asyncio.Event) -> None:
    """Every ``interval_s`` until ``stop``: delete expired keys. Every replica runs it (a batch another
    replica holds is skipped); a database error waits for the next round."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            deleted = await store.purge()
        except (SQLAlchemyError, OSError) as e:
            log.warning("api.idempotency_purge_failed", error=str(e) or type(e).__name__)
            continue
        if deleted:
            log.info("api.idempotency_keys_expired", deleted=deleted)


def _in_progress() -> ApiError:
    metrics.REJECTED.labels("idempotency_conflict").inc()
    return ApiError(409, "idempotency_key_in_progress", f"a request with this {HEADER} is still being "
                    "processed; retry shortly", headers={"Retry-After": "1"})
