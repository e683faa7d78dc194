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

Why not derive the message id from ``hash(account, key)`` alone: ids are time-ordered ULIDs that sort
the message list, and JetStream dedupe only lasts two minutes, so the database row is needed anyway;
keeping the id *in* the row gives the same dedupe while keeping ids uniform.

Rows are kept (no expiry yet); ``created_at`` doubles as the lease start of a pending row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway import metrics
from postwire.api_gateway.errors import ApiError, InvalidInput
from postwire.db.models import IdempotencyKey

PENDING = 0
HEADER = "Idempotency-Key"


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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], lease_s: float) -> None:
        self._sessions = sessions
        self._lease = timedelta(seconds=lease_s)

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
        stmt = insert(IdempotencyKey).values(
            account_id=account_id, key=key, request_hash=request_hash, status_code=PENDING,
            response={"id": message_id},
        ).on_conflict_do_nothing().returning(IdempotencyKey.key)
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
        same Nats-Msg-Id, which JetStream deduplicates if the first attempt did get through."""
        async with self._sessions.begin() as s:
            await s.execute(update(IdempotencyKey).where(
                IdempotencyKey.account_id == account_id, IdempotencyKey.key == key,
                IdempotencyKey.status_code == PENDING).values(created_at=datetime(1970, 1, 1, tzinfo=UTC)))


def _in_progress() -> ApiError:
    metrics.REJECTED.labels("idempotency_conflict").inc()
    return ApiError(409, "idempotency_key_in_progress", f"a request with this {HEADER} is still being "
                    "processed; retry shortly", headers={"Retry-After": "1"})
