"""Which recipients are suppressed: the router's check, answered from memory when memory can answer.

The SUPPRESSIONS bucket (postwire.db.suppressions) holds each account's list. Asking it for every
recipient of every message cost a NATS round trip each: 4 % of the whole relay's CPU per message at full
rate, and a wait on the routing path. So the router keeps in memory which keys the bucket holds
(:class:`KeyFilter`, fed by a KV watch): a recipient whose key is absent is not suppressed, and nobody is
asked; one whose key is present is looked up in the bucket as before (the entry may have expired, and its
reason goes into the event). Only a hash of each key is kept, some 60 bytes per suppressed address.

When memory may be behind, every recipient is looked up in the bucket, as before:
- until the watch has delivered the bucket's contents (start-up);
- when the bucket has moved on and the watch has not followed. Every :data:`CHECK_S` the filter reads the
  stream's last sequence; if the watch has not reached the one read the time before, the filter is
  stale until it has (nats-py's ordered consumer recreates itself after two missed heartbeats, as after a
  NATS restart).
A new suppression reaches the router's memory within milliseconds of its KV put; with the watch broken,
the router goes back to asking within two check periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from postwire.core.topology import SUPPRESSIONS
from postwire.db.suppressions import BULK, SuppressionMirror, blocks, kv_key, normalise_address

log = structlog.get_logger(__name__)

CHECK_S = 1.0  # how often the watch is checked against the bucket's stream
_STREAM = f"KV_{SUPPRESSIONS}"


class KeyFilter:
    """The keys present in the SUPPRESSIONS bucket (hashes of them), and whether that set is current."""

    def __init__(self, js: JetStreamContext, check_s: float = CHECK_S) -> None:
        self._js = js
        self._check_s = check_s
        self._keys: set[int] = set()
        self._applied = 0  # stream sequence of the newest entry applied
        self._loaded = False  # the watch has delivered the bucket's contents
        self._stale = False  # the watch is behind the bucket (or broken)
        self._expected = 0  # the stream's last sequence at the previous check

    def current(self) -> bool:
        return self._loaded and not self._stale

    def may_hold(self, key: str) -> bool:
        """False: the bucket has no entry under ``key`` (as of the watch). True: it may have one."""
        return hash(key) in self._keys

    def apply(self, entry: KeyValue.Entry | None) -> None:
        """One update of the watch; None marks the end of the bucket's initial contents."""
        if entry is None:
            self._loaded = True
            return
        self._applied = max(self._applied, entry.revision or 0)
        if entry.operation in (KV_DEL, KV_PURGE):
            self._keys.discard(hash(entry.key))
        else:
            self._keys.add(hash(entry.key))

    def check(self, last_seq: int) -> None:
        """Stale while the watch is behind the last sequence read a check period ago (a put since then
        may still be on its way)."""
        stale = self._applied < self._expected
        if stale != self._stale and self._loaded:
            log.info("suppressions.filter_stale" if stale else "suppressions.filter_current",
                     applied=self._applied, expected=self._expected)
        self._stale = stale
        self._expected = last_seq

    async def run(self) -> None:
        """Watch the bucket and check the watch, until cancelled; a failed watch is started anew. Until
        the new one has loaded, and once this has ended, the filter is not current: a watch that died
        must not leave the router trusting a set nothing updates any more."""
        try:
            while True:
                try:
                    await self._watch()
                except (nats.errors.Error, TimeoutError, OSError) as e:
                    log.warning("suppressions.watch_failed", error=str(e) or type(e).__name__)
                except Exception:
                    log.exception("suppressions.watch_crashed")
                self._loaded = False
                await asyncio.sleep(self._check_s)
        finally:
            self._loaded = False

    async def _watch(self) -> None:
        self._loaded = False
        start = await self._last_seq()  # before the watch: its snapshot covers at least this far
        kv = await self._js.key_value(SUPPRESSIONS)
        watcher = await kv.watchall(meta_only=True)
        following = asyncio.create_task(self._follow(watcher))
        try:
            while not self._loaded:
                await asyncio.sleep(0.05)
                _still_following(following)
            # a bucket whose last entries were purged has a last sequence no entry carries
            self._applied = max(self._applied, start)
            log.info("suppressions.filter_loaded", keys=len(self._keys))
            while True:
                _still_following(following)
                self.check(await self._last_seq())
                await asyncio.sleep(self._check_s)
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await following
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            self.apply(entry)

    async def _last_seq(self) -> int:
        info = await self._js.stream_info(_STREAM)
        return info.state.last_seq


def _still_following(task: asyncio.Task[None]) -> None:
    """Raise when the task applying the watch's updates has ended: what stopped it, or that it ended."""
    if task.done():
        task.result()
        raise nats.errors.Error("the KV watch ended")


class SuppressionCheck:
    """Which recipients are suppressed: the key filter first, then the bucket for the keys it may hold,
    with a small cache of positive answers only.

    Only hits are cached: a new suppression must take effect at once (the next message to a freshly
    bounced address is the one that hurts), while a removal may wait ``ttl_s``.
    """

    def __init__(self, mirror: SuppressionMirror, ttl_s: float, keys: KeyFilter,
                 max_size: int = 10_000) -> None:
        self._mirror = mirror
        self._keys = keys
        self._ttl = ttl_s
        self._max = max_size
        # (account, address) → (expiry, reason, scope)
        self._hits: OrderedDict[tuple[str, str], tuple[float, str, str]] = OrderedDict()

    async def follow(self) -> None:
        """Keep the key filter current (a background task for as long as the router runs)."""
        await self._keys.run()

    async def suppressed(self, account_id: str, recipients: Sequence[str], lane: str = BULK,
                         list_id: str = "") -> dict[str, str]:
        """``{recipient: reason}`` for the ones suppressed for a message of ``lane`` naming ``list_id``
        (an unsubscribe blocks bulk mail only: postwire.db.suppressions.blocks); raises
        MirrorUnavailable (retry later)."""
        found: dict[str, str] = {}
        ask: list[str] = []
        now = time.monotonic()
        for rcpt in recipients:
            hit = self._hits.get((account_id, normalise_address(rcpt)))
            if hit is not None and hit[0] > now:
                if blocks(hit[2], lane, list_id):
                    found[rcpt] = hit[1]
            else:
                ask.append(rcpt)
        keys = self._keys
        if keys.current():
            ask = [rcpt for rcpt in ask if keys.may_hold(kv_key(account_id, rcpt))]
        if not ask:
            return found
        for rcpt, entry in (await self._mirror.lookup_many(account_id, ask)).items():
            if blocks(entry.scope, lane, list_id):
                found[rcpt] = entry.reason
            self._remember(account_id, rcpt, entry.reason, entry.scope, now)
        return found

    def _remember(self, account_id: str, rcpt: str, reason: str, scope: str, now: float) -> None:
        if self._ttl <= 0:
            return
        self._hits[(account_id, normalise_address(rcpt))] = (now + self._ttl, reason, scope)
        while len(self._hits) > self._max:
            self._hits.popitem(last=False)
