"""The log of webhook POSTs (webhook_attempts): what "recent deliveries" shows in the API and the console.

Every attempt is recorded, but not one INSERT per POST: attempts gather in memory and are written in one
statement every ``webhook_log_flush_s`` (or sooner once ``FLUSH_AT`` are waiting). The log is best
effort by design: a delivery's state lives in JetStream, so a database that is down delays no POST; the
attempts are kept (up to ``MAX_WAITING``) and written once it is back, and those of a crash in between
are lost, as a log line would be. Old attempts are pruned after ``webhook_log_days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.db import webhooks as store
from postwire.db.webhooks import AttemptRecord, Delivery

log = structlog.get_logger(__name__)

FLUSH_AT: Final = 500
MAX_WAITING: Final = 20_000  # beyond this while the database is away, the oldest are dropped
PRUNE_BATCH: Final = 5_000
PRUNE_EVERY_S: Final = 600.0


def event_type(body: bytes) -> str:
    """The delivered event's type, read back from the body (deliveries queued before the log existed,
    test events and replays all carry it there)."""
    try:
        value = json.loads(body)["event"]["type"]
    except (ValueError, KeyError, TypeError):
        return ""
    return value if isinstance(value, str) else ""


class AttemptLog:
    """Buffers attempt records and writes them in batches; ``run`` flushes and prunes until stopped."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], flush_s: float, keep_days: float) -> None:
        self._sessions, self._flush_s, self._keep = sessions, flush_s, timedelta(days=keep_days)
        self._waiting: list[AttemptRecord] = []
        self._due = asyncio.Event()
        self.dropped = 0

    def add(self, d: Delivery, outcome: str, http_status: int | None, error: str, duration_s: float) -> None:
        """Log one POST of ``d`` (written at the next flush)."""
        self.add_record(AttemptRecord(
            webhook_id=d.webhook_id, account_id=d.account_id, event_id=d.event_id,
            event_type=event_type(d.body), attempt=d.attempts + 1, outcome=outcome, http_status=http_status,
            error=error, duration_ms=round(duration_s * 1000), at=datetime.now(UTC)))

    def add_record(self, record: AttemptRecord) -> None:
        self._waiting.append(record)
        if len(self._waiting) > MAX_WAITING:
            excess = len(self._waiting) - MAX_WAITING
            del self._waiting[:excess]
            self.dropped += excess
        if len(self._waiting) >= FLUSH_AT:
            self._due.set()

    async def flush(self) -> None:
        """Write what is waiting; on a database error keep it for the next flush."""
        batch, self._waiting = self._waiting, []
        self._due.clear()
        if not batch:
            return
        try:
            async with self._sessions.begin() as s:
                await store.record_attempts(s, batch)
        except Exception as e:  # the database is away: keep the records, deliveries go on regardless
            self._waiting[:0] = batch
            log.warning("webhooks.attempt_log_failed", waiting=len(self._waiting),
                        error=str(e).splitlines()[0] if str(e) else repr(e))

    async def prune(self) -> None:
        """Delete attempts older than the retention, a bounded statement at a time."""
        before = datetime.now(UTC) - self._keep
        while True:
            async with self._sessions.begin() as s:
                deleted = await store.prune_attempts(s, before, PRUNE_BATCH)
            if deleted < PRUNE_BATCH:
                return

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``flush_s`` (sooner when a batch is full) and prune every ``PRUNE_EVERY_S`` until
        ``stop``, then flush a last time."""
        next_prune = time.monotonic()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), self._flush_s)
                await self.flush()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    try:
                        await self.prune()
                    except Exception as e:  # the database is away: next time
                        log.warning("webhooks.attempt_prune_failed", error=str(e).splitlines()[0] if str(e)
                                    else repr(e))
        finally:
            await self.flush()
