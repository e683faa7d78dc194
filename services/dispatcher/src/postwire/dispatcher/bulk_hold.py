"""Holding the bulk mail of accounts whose bulk lane is paused (docs/delivery.md, "Pausing bulk mail on
complaints"); their transactional mail is routed as always.

Which accounts are paused is read from PostgreSQL (``accounts.bulk_paused_at``, postwire.db.bulk_pause)
at most once per POSTWIRE_BULK_PAUSE_CACHE_TTL_S, for all accounts in one query, and only when a bulk
message is routed: nothing is asked per message. While PostgreSQL cannot answer, the last answer holds.

A bulk message of a paused account, fetched from ``inbound.<account>.bulk``, is moved once to
``inbound.<account>.held`` (published with its own message id, then acked): the bulk consumer is free at
once, so a paused account's backlog never fills its ``max_ack_pending`` and holds up other accounts'
bulk mail. The held subject has its own consumer (``router-held``): a message of an account still paused
is handed back with a delay (POSTWIRE_BULK_HOLD_RECHECK_S); once the account is resumed it is routed
like any bulk message. Each held message costs one fetch and one nak per recheck period while it is
among the consumer's first POSTWIRE_BULK_HOLD_MAX_ACK_PENDING; the rest wait unread in the stream.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.msg import Msg
from nats.js.api import Header
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core import settle
from postwire.core.jetstream import PipelinedJetStream
from postwire.core.lanes import BULK, lane_of
from postwire.core.topology import inbound_held_subject
from postwire.db.bulk_pause import paused_accounts
from postwire.dispatcher import metrics
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)


class PausedAccounts:
    """The accounts whose bulk lane is paused, as of at most ``ttl_s`` ago (0: asked every time)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_s: float) -> None:
        self._sessions = sessions
        self._ttl = ttl_s
        self._paused: set[str] = set()
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def paused(self, account_id: str) -> bool:
        if time.monotonic() >= self._until:
            async with self._lock:
                if time.monotonic() >= self._until:
                    await self._refresh()
        return account_id in self._paused

    async def _refresh(self) -> None:
        try:
            async with self._sessions() as s:
                self._paused = await paused_accounts(s)
        except (DBAPIError, OperationalError, OSError, TimeoutError) as e:
            log.warning("router.bulk_pause_unavailable", error=str(e) or type(e).__name__)
        self._until = time.monotonic() + self._ttl


class BulkHold:
    def __init__(self, js: PipelinedJetStream, accounts: PausedAccounts, recheck_s: float) -> None:
        self._js = js
        self._accounts = accounts
        self._recheck_s = recheck_s

    async def holds(self, msg: Msg, inbound: envelope_pb2.InboundMessage) -> bool:
        """True when ``msg`` is held (and settled): bulk mail of a paused account. Raises what a publish
        raises (the router retries the message)."""
        if lane_of(inbound.stream) != BULK or not await self._accounts.paused(inbound.account_id):
            return False
        held = inbound_held_subject(inbound.account_id)
        if msg.subject == held:  # still paused: look again later
            await settle.nak(msg, delay=self._recheck_s)
            return True
        msg_id = (msg.headers or {}).get(Header.MSG_ID) or inbound.message_id
        await self._js.publish(held, msg.data, headers={Header.MSG_ID: f"{msg_id}.held"})
        metrics.ROUTED.labels("held").inc()
        log.info("router.bulk_held", message_id=inbound.message_id, account_id=inbound.account_id)
        await settle.ack(msg)
        return True
