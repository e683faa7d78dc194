"""Limits shared by every replica of a service, kept in the NATS KV bucket ``LIMITS`` (docs/limits.md).

Three kinds, each counted per key (an account id, a client IP, a username):

* :class:`SharedBuckets`: token buckets, one or more windows charged together (the hourly and daily send
  quota); the API request rate and send quota, the SMTP connection rate per IP.
* :class:`SharedSlots`: at most ``limit`` held at once; open SMTP connections per IP.
* :class:`SharedFailures`: ``limit`` failures within a window lock the key out; SMTP AUTH failures.

The store is the authority. Every change is a read-modify-write that names the revision it read
(kvcas.py), so replicas never overwrite each other. Buckets and slots are *leased*: a replica takes
what a request needs, plus a share of what is left when the limit is large, in one write, and serves
the next requests from what it holds without asking NATS; what it does not use is given back once the
key has been idle ``IDLE_S``. Nothing is handed out twice, so across replicas the limit holds as if one
process enforced it; the price is the other way round (what one replica holds is not available to the
others until used or given back). A refusal is remembered locally (the store's level when last read,
refilled at the bucket's rate) for ``REFUSED_S``, so a client hammering a used-up limit costs one
round trip a second, not one per attempt.
Failures are rare and each is one write: a lockout must not depend on leases.

When the store cannot be reached (NATS disconnected, a KV request slower than ``TIMEOUT_S``), each
replica enforces its share locally: the figures divided by the live replicas of its service last seen
(the ``members.<service>`` key, renewed every ``HEARTBEAT_S``), so the total stays at the limit while
clients are spread over the replicas. Allowance leased before is still used; the store is tried again
after ``RETRY_S``. Without a store at all (``store=None``: unit tests) the same code is a plain
in-process limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from postwire.core import kvcas
from postwire.core.jetstream import PipelinedJetStream
from postwire.core.topology import LIMITS

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Value = kvcas.Value
Change = Callable[[Value | None], Value | None]
V = TypeVar("V")

TIMEOUT_S = 1.0  # a KV request slower than this counts as the store being unreachable
RETRY_S = 2.0  # after that, the local share is used this long before the store is asked again
SYNC_S = 1.0  # how often idle leases are given back
IDLE_S = 2.0  # a key unused this long gives back what this replica holds of it
HEARTBEAT_S = 5.0  # how often a replica renews its membership (and reads the others')
MEMBER_TTL_S = 20.0  # a replica that has not renewed for this long is gone: its slots are free again
TOMBSTONE_S = 3600.0  # a gone replica stays listed (as gone) this long, then is dropped
LEASE_SHARE = 1 / 8  # the most a replica takes beyond its need: this share of the limit
REFUSED_S = 1.0  # a refusal is decided locally this long, then the store is asked again
CAS_TRIES = 5
MAX_KEYS = 100_000  # keys tracked per limiter and process (least recently used forgotten first)
LOCKS_SUBJECT = "limits.locked"  # core NATS: a new lockout, so every replica knows at once


class StoreUnavailable(Exception):
    """The store could not be read or written now: use the local share."""


def replica_id(now: float) -> str:
    """A fresh id per process start: its start time (hex milliseconds) and 32 random bits."""
    return f"{int(now * 1000):011x}{secrets.token_hex(4)}"


def _started(replica: str) -> float:
    try:
        return int(replica[:11], 16) / 1000
    except ValueError:
        return 0.0


_SAFE_KEY = re.compile(r"[-_=A-Za-z0-9]{1,64}")
_READABLE = str.maketrans({".": "_", ":": "-", "/": "="})


def kv_key(name: str, key: str) -> str:
    """``name.key`` with the key as a KV key token: an id or an address stays readable
    (192.0.2.1 → 192_0_2_1, 2001:db8::/64 → 2001-db8--=64), anything else is hashed."""
    token = key.translate(_READABLE)
    if not _SAFE_KEY.fullmatch(token):
        token = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{name}.{token}"


class Limiter(Protocol):
    name: str

    async def sync(self, force: bool) -> None:
        """Give back what this replica holds and no longer uses (``force``: all of it, at shutdown)."""


class LimitStore:
    """One process's access to the ``LIMITS`` bucket: compare-and-set, reachability, membership, the
    lockout broadcast, and the background loop that gives idle leases back (:meth:`run`)."""

    def __init__(self, js: PipelinedJetStream, nc: Client, service: str, *, clock: Clock = time.time,
                 timeout_s: float = TIMEOUT_S) -> None:
        self.service = service
        self.replica = replica_id(clock())
        self._js = js
        self._nc = nc
        self._clock = clock
        self._timeout = timeout_s
        self._cache: OrderedDict[str, tuple[Value | None, int]] = OrderedDict()
        self._retry_at = 0.0  # monotonic: before it, the store counts as unreachable
        self._members: dict[str, float] = {}  # replica → until, as last read
        self._members_read_at = 0.0
        self._live = 1  # live replicas of this service when the members were last read
        self._limiters: list[Limiter] = []
        self._failures: dict[str, SharedFailures] = {}
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- reachability and members -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return bool(self._nc.is_connected) and time.monotonic() >= self._retry_at

    def replicas(self) -> int:
        """Live replicas of this service when last seen (at least this one): the divisor of the local
        share. Counted at the read, not now: during an outage the others' memberships are not renewed,
        yet they have not gone away."""
        return self._live

    def alive(self, replica: str, now: float) -> bool:
        """Whether ``replica``'s slots still count. One never listed counts unless it started before we
        last read the members (then it would have been listed): a replica joins before it takes any."""
        if replica == self.replica:
            return True
        until = self._members.get(replica)
        if until is not None:
            return until >= now
        return _started(replica) >= self._members_read_at - HEARTBEAT_S

    async def heartbeat(self, leaving: bool = False) -> None:
        """Renew this replica's membership (``leaving``: end it) and read the others'."""
        now = self._clock()

        def renew(value: Value | None) -> Value:
            members = {r: float(u) for r, u in (value or {}).get("m", {}).items() if u >= now - TOMBSTONE_S}
            members[self.replica] = now if leaving else now + MEMBER_TTL_S
            return {"m": members}

        value, _ = await self.modify(f"members.{self.service}", renew)
        self._members = dict((value or {}).get("m", {}))
        self._members_read_at = now
        self._live = 1 + sum(1 for r, until in self._members.items() if r != self.replica and until >= now)

    # --- compare-and-set ------------------------------------------------------------------------------------

    async def modify(self, key: str, change: Change) -> tuple[Value | None, bool]:
        """Apply ``change`` to the key's value and store the result unless it is None; returns the value
        now stored and whether we wrote it. ``change`` may run more than once (another writer came first)
        and must only compute. A decision made on this process's cached copy of the value is confirmed
        on a fresh read before a refusal (None) is believed."""
        cached = self._cache.get(key)
        fresh = False
        for _ in range(CAS_TRIES):
            if cached is None:
                cached = await self._read(key)
                fresh = True
            value, revision = cached
            new = change(value)
            if new is None:
                if fresh:
                    return value, False
                cached = None
                continue
            try:
                revision = await self._call(kvcas.write(self._js, LIMITS, key, new, revision, self._timeout))
            except kvcas.Conflict:
                self._cache.pop(key, None)
                cached = None
                continue
            self._remember(key, new, revision)
            return new, True
        raise StoreUnavailable(f"{key}: changed by others {CAS_TRIES} times in a row")

    async def _read(self, key: str) -> tuple[Value | None, int]:
        found = await self._call(kvcas.read(self._js, LIMITS, key, self._timeout))
        self._remember(key, *found)
        return found

    def _remember(self, key: str, value: Value | None, revision: int) -> None:
        self._cache[key] = (value, revision)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_KEYS:
            self._cache.popitem(last=False)

    async def _call(self, op: Coroutine[Any, Any, V]) -> V:
        """Run one KV request; NATS not answering makes the store unusable for ``RETRY_S``."""
        if not self._nc.is_connected:
            op.close()
            raise StoreUnavailable("not connected to NATS")
        try:
            return await op
        except kvcas.UNREACHABLE as e:
            if time.monotonic() >= self._retry_at:
                log.warning("limits.store_unreachable", error=str(e) or type(e).__name__, retry_in=RETRY_S)
            self._retry_at = time.monotonic() + RETRY_S
            raise StoreUnavailable(str(e) or type(e).__name__) from e

    # --- limiters, the background loop and the lockout broadcast -------------------------------------------

    def register(self, limiter: Limiter) -> None:
        self._limiters.append(limiter)
        if isinstance(limiter, SharedFailures):
            self._failures[limiter.name] = limiter

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A background lease request; its failure is already handled (local share), so only logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("limits.background_failed", error=str(task.exception()))

    async def start(self) -> None:
        """Join (so other replicas count this one before it takes anything) and follow lockouts. The store
        being unreachable now is not fatal: the local share applies until it answers."""
        self._sub = await self._nc.subscribe(f"{LOCKS_SUBJECT}.{self.service}", cb=self._on_lock)
        with contextlib.suppress(StoreUnavailable):
            await self.heartbeat()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: give idle leases back every ``SYNC_S``, renew membership every ``HEARTBEAT_S``.
        Then give everything back and leave, so the other replicas can use it at once."""
        next_beat = time.monotonic() + HEARTBEAT_S
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SYNC_S)
                if stop.is_set():
                    break
                if time.monotonic() >= next_beat and self.usable:
                    with contextlib.suppress(StoreUnavailable):
                        await self.heartbeat()
                        next_beat = time.monotonic() + HEARTBEAT_S
                await self.sync(force=False)
        finally:
            await self.close()

    async def sync(self, force: bool) -> None:
        if not self.usable:
            return
        for limiter in self._limiters:
            await limiter.sync(force)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._nc.is_connected:
            await self.sync(force=True)
            with contextlib.suppress(StoreUnavailable):
                await self.heartbeat(leaving=True)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def announce_lock(self, name: str, key: str, until: float) -> None:
        with contextlib.suppress(*kvcas.UNREACHABLE):
            await self._nc.publish(f"{LOCKS_SUBJECT}.{self.service}",
                                   json.dumps({"n": name, "k": key, "u": until}).encode())

    async def _on_lock(self, msg: Msg) -> None:
        try:
            data = json.loads(msg.data)
            limiter = self._failures.get(data["n"])
            if limiter is not None:
                limiter.learn(str(data["k"]), float(data["u"]))
        except (ValueError, KeyError, TypeError):
            log.warning("limits.bad_lock_message")


async def _each(jobs: Sequence[Coroutine[Any, Any, None]], at_once: int = 32) -> None:
    """Run ``jobs`` a few at a time; a store failure ends the round (the rest waits for the next)."""
    for i in range(0, len(jobs), at_once):
        results = await asyncio.gather(*jobs[i:i + at_once], return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for r in failed:
            if not isinstance(r, StoreUnavailable):
                raise r
        if failed:
            for job in jobs[i + at_once:]:
                job.close()  # never started: no "never awaited" warning
            return


def _bounded(table: OrderedDict[str, V], key: str, make: Callable[[], V], max_keys: int) -> V:
    """``table[key]``, created if missing, marked recently used; the least recently used go past the bound."""
    item = table.get(key)
    if item is None:
        item = table[key] = make()
        while len(table) > max_keys:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    return item


# --- token buckets ----------------------------------------------------------------------------------------

Window = tuple[float, float]  # (tokens per second, capacity)


@dataclass
class _Lease:
    held: list[float]  # taken from the store per window, not used yet (negative: refusals owed)
    used_at: float
    seen: list[float] | None = None  # the store's levels when last read
    seen_at: float = 0.0
    busy: asyncio.Task[None] | None = None  # a lease request or give-back in flight


class SharedBuckets:
    """Token buckets per key: each window holds ``capacity`` tokens and refills at ``rate`` per second;
    :meth:`take` takes ``n`` from every window or from none. ``charge_refused``: a refused take still
    costs its tokens (down to minus the capacity), so a client that keeps trying stays refused."""

    def __init__(self, store: LimitStore | None, name: str, windows: Sequence[Window], *,
                 charge_refused: bool = False, clock: Clock = time.time, max_keys: int = MAX_KEYS) -> None:
        if not windows or any(rate <= 0 or cap <= 0 for rate, cap in windows):
            raise ValueError("every window needs a positive rate and capacity")
        self.name = name
        self.windows = [(float(rate), float(cap)) for rate, cap in windows]
        self._store = store
        self._charge_refused = charge_refused
        self._clock = clock
        self._max_keys = max_keys
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._local: OrderedDict[str, Value] = OrderedDict()  # the local share's buckets
        self._local_scale = 1
        # a replica takes beyond its need only when the limit is large: a lease must never make a small
        # limit run out early on the other replicas
        self._extra = [math.floor(cap * LEASE_SHARE) for _, cap in self.windows]
        self._low = [extra / 2 for extra in self._extra]  # held below this: lease more in the background
        if store is not None:
            store.register(self)

    @property
    def capacity(self) -> float:
        return min(cap for _, cap in self.windows)

    async def take(self, key: str, n: float) -> float:
        """Take ``n`` tokens: 0.0 when taken, else the seconds until they could be (nothing taken)."""
        if self._store is None:
            return self._local_take(key, n, self._clock())
        wait = 0.0
        for _ in range(4):
            now = self._clock()
            lease = _bounded(self._leases, key, partial(_Lease, [0.0] * len(self.windows), now),
                             self._max_keys)
            if all(h >= n for h in lease.held):
                for i in range(len(lease.held)):
                    lease.held[i] -= n
                lease.used_at = now
                self._top_up(key, lease, n, now)
                return 0.0
            if not self._store.usable:
                return self._local_take(key, n, now)
            wait = self._wait(lease, n, now)
            if wait > 0:
                self._refused(lease, n, now)
                return wait
            try:
                await self._acquire(key, lease, n)
            except StoreUnavailable:
                return self._local_take(key, n, self._clock())
        return max(wait, 1.0 / max(rate for rate, _ in self.windows))

    def give_back(self, key: str, n: float) -> None:
        """Tokens taken for something that then did not happen (the queue refused the message)."""
        lease = self._leases.get(key)
        if lease is not None and self._store is not None and self._store.usable:
            for i, (_, cap) in enumerate(self.windows):
                lease.held[i] = min(lease.held[i] + n, cap)
            return
        state = self._local.get(key)
        if state is not None:
            now = self._clock()
            windows = self._scaled()
            levels = _levels(state, windows, now)
            caps = [cap for _, cap in windows]
            self._local[key] = _encode([min(cap, lv + n) for lv, cap in zip(levels, caps, strict=True)], now,
                                       state)

    def _wait(self, lease: _Lease, n: float, now: float) -> float:
        """Seconds until the store can have ``n`` more for us, from its levels read less than
        ``REFUSED_S`` ago (0: ask it). Other replicas mostly take, so this is the soonest; what they give
        back is noticed on the next read."""
        if lease.seen is None or now - lease.seen_at >= REFUSED_S:
            return 0.0
        wait = 0.0
        for i, (rate, cap) in enumerate(self.windows):
            need = n - lease.held[i]
            level = min(cap, lease.seen[i] + max(0.0, now - lease.seen_at) * rate)
            if level < need:
                wait = max(wait, (need - level) / rate)
        return wait

    def _refused(self, lease: _Lease, n: float, now: float) -> None:
        lease.used_at = now
        if self._charge_refused:
            for i, (_, cap) in enumerate(self.windows):
                lease.held[i] = max(-cap, lease.held[i] - n)

    async def _acquire(self, key: str, lease: _Lease, n: float) -> None:
        """Lease more (one request per key at a time: the others wait for it, then look again)."""
        if lease.busy is None or lease.busy.done():
            assert self._store is not None
            lease.busy = self._store.spawn(self._lease_more(key, lease, n))
        await asyncio.shield(lease.busy)

    def _top_up(self, key: str, lease: _Lease, n: float, now: float) -> None:
        """Once a take leaves less than half a lease, lease more in the background, so a steady stream
        of requests does not wait for NATS (large limits only: on a small one the next request may come
        to another replica, and what this one took ahead would be missing there)."""
        store = self._store
        if (store is None or all(h >= max(n, low) for h, low in zip(lease.held, self._low, strict=True))
                or any(extra < n for extra in self._extra)
                or (lease.busy is not None and not lease.busy.done())
                or not store.usable or self._wait(lease, n, now) > 0):
            return
        lease.busy = store.spawn(self._lease_more(key, lease, n))

    async def _lease_more(self, key: str, lease: _Lease, n: float) -> None:
        assert self._store is not None
        now = self._clock()
        need = [max(0.0, n - h) for h in lease.held]
        granted: list[float] = []

        def change(value: Value | None) -> Value | None:
            levels = _levels(value, self.windows, now)
            granted.clear()
            lease.seen, lease.seen_at = levels, now
            if any(lv < nd for lv, nd in zip(levels, need, strict=True)):
                return None
            grant = [nd + min(extra, math.floor((lv - nd) / 2))
                     for lv, nd, extra in zip(levels, need, self._extra, strict=True)]
            if not any(grant):
                return None
            left = [lv - g for lv, g in zip(levels, grant, strict=True)]
            granted.extend(grant)
            lease.seen = left
            return _encode(left, now, value)

        await self._store.modify(kv_key(self.name, key), change)
        for i, g in enumerate(granted):
            lease.held[i] += g

    async def sync(self, force: bool) -> None:
        """Give back what idle keys hold, settle what refusals owe; forget keys with nothing to settle."""
        now = self._clock()
        jobs = []
        for key, lease in list(self._leases.items()):
            if lease.busy is not None and not lease.busy.done():
                continue
            idle = force or now - lease.used_at >= IDLE_S
            if any(h < 0 for h in lease.held) or (idle and any(h > 0 for h in lease.held)):
                jobs.append(self._settle(key, lease))
            elif idle:
                del self._leases[key]
        await _each(jobs)

    async def _settle(self, key: str, lease: _Lease) -> None:
        assert self._store is not None
        if lease.busy is not None and not lease.busy.done():
            return  # a lease request started since the round began: next round
        now = self._clock()
        amounts = list(lease.held)
        lease.held = [0.0] * len(amounts)  # a take meanwhile asks the store (after this, via busy)

        def change(value: Value | None) -> Value | None:
            levels = _levels(value, self.windows, now)
            left = [max(-cap, min(cap, lv + a)) for lv, a, (_, cap) in zip(levels, amounts, self.windows,
                                                                              strict=True)]
            lease.seen = None  # what others gave back meanwhile is not in it: the next take asks
            return _encode(left, now, value)

        task = asyncio.current_task()
        lease.busy = task
        try:
            await self._store.modify(kv_key(self.name, key), change)
        except StoreUnavailable:
            for i, a in enumerate(amounts):
                lease.held[i] += a
            raise
        finally:
            if lease.busy is task:
                lease.busy = None

    # the local share (no store, or the store unreachable)

    def _scaled(self) -> list[Window]:
        scale = self._store.replicas() if self._store is not None else 1
        if scale != self._local_scale:
            self._local.clear()
            self._local_scale = scale
        return [(rate / scale, cap / scale) for rate, cap in self.windows]

    def _local_take(self, key: str, n: float, now: float) -> float:
        windows = self._scaled()
        state = self._local.get(key)
        levels = _levels(state, windows, now)
        waits = [(n - lv) / rate for lv, (rate, _) in zip(levels, windows, strict=True) if lv < n]
        if waits:
            if self._charge_refused:
                levels = [max(-cap, lv - n) for lv, (_, cap) in zip(levels, windows, strict=True)]
                _bounded(self._local, key, dict, self._max_keys)
                self._local[key] = _encode(levels, now, state)
            return max(waits)
        _bounded(self._local, key, dict, self._max_keys)
        self._local[key] = _encode([lv - n for lv in levels], now, state)
        return 0.0


def _levels(value: Value | None, windows: Sequence[Window], now: float) -> list[float]:
    """Each window's tokens at ``now``: stored level plus the refill since it was written (full when the
    key is absent, aged out, or was written for other windows)."""
    if not value or len(value.get("t", ())) != len(windows):
        return [cap for _, cap in windows]
    elapsed = max(0.0, now - float(value.get("a", now)))
    return [min(cap, float(t) + elapsed * rate) for t, (rate, cap) in zip(value["t"], windows, strict=True)]


def _encode(levels: Sequence[float], now: float, old: Value | None) -> Value:
    """The stored form. The time never goes back: a replica whose clock is behind must not make the next
    reader count the same refill twice."""
    at = max(now, float((old or {}).get("a", now)))
    return {"t": [round(lv, 6) for lv in levels], "a": at}  # the time unrounded: it must not eat refill


# --- slots ------------------------------------------------------------------------------------------------


@dataclass
class _Slots:
    used_at: float
    open: int = 0  # in use here
    held: int = 0  # leased from the store (≥ open while the store was reachable)
    refused_until: float = 0.0
    busy: asyncio.Task[None] | None = None


class SharedSlots:
    """At most ``limit`` in use at once per key across replicas. The store keeps each replica's holding
    (``{"h": {replica: n}}``); holdings of replicas gone from the members list no longer count."""

    def __init__(self, store: LimitStore | None, name: str, limit: int, *, clock: Clock = time.time,
                 max_keys: int = MAX_KEYS) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.name = name
        self.limit = limit
        self._store = store
        self._clock = clock
        self._max_keys = max_keys
        self._slots: OrderedDict[str, _Slots] = OrderedDict()
        self._extra = math.floor(limit * LEASE_SHARE)
        if store is not None:
            store.register(self)

    def open_count(self, key: str) -> int:
        slots = self._slots.get(key)
        return slots.open if slots is not None else 0

    async def acquire(self, key: str) -> bool:
        """Take a slot (True) or not: ``limit`` are in use across the replicas."""
        for _ in range(3):
            now = self._clock()
            slots = _bounded(self._slots, key, partial(_Slots, now), self._max_keys)
            if slots.open < slots.held:
                return self._use(slots, now)
            if self._store is None or not self._store.usable:
                return self._local_acquire(slots, now)
            if now < slots.refused_until:
                return False
            try:
                if slots.busy is None or slots.busy.done():
                    slots.busy = self._store.spawn(self._lease_more(key, slots))
                await asyncio.shield(slots.busy)
            except StoreUnavailable:
                return self._local_acquire(slots, self._clock())
        return False

    def release(self, key: str) -> None:
        slots = self._slots.get(key)
        if slots is not None and slots.open > 0:
            slots.open -= 1
            slots.used_at = self._clock()

    @staticmethod
    def _use(slots: _Slots, now: float) -> bool:
        slots.open += 1
        slots.used_at = now
        return True

    def _local_acquire(self, slots: _Slots, now: float) -> bool:
        share = max(1, self.limit // (self._store.replicas() if self._store is not None else 1))
        return self._use(slots, now) if slots.open < max(slots.held, share) else False

    @staticmethod
    def _others(store: LimitStore, value: Value | None, now: float) -> dict[str, int]:
        holders = (value or {}).get("h", {})
        return {r: int(h) for r, h in holders.items() if r != store.replica and store.alive(r, now)}

    async def _lease_more(self, key: str, slots: _Slots) -> None:
        store = self._store
        assert store is not None
        now = self._clock()
        want = max(1, slots.open + 1 - slots.held)
        granted = 0

        def change(value: Value | None) -> Value | None:
            nonlocal granted
            others = self._others(store, value, now)
            free = self.limit - sum(others.values()) - slots.held
            granted = 0
            if free < want:
                return None
            granted = want + min(self._extra, (free - want) // 2)
            return {"h": {**others, store.replica: slots.held + granted}}

        await store.modify(kv_key(self.name, key), change)
        if granted:
            slots.held += granted
        else:
            slots.refused_until = now + REFUSED_S

    async def sync(self, force: bool) -> None:
        now = self._clock()
        jobs = []
        for key, slots in list(self._slots.items()):
            if slots.busy is not None and not slots.busy.done():
                continue
            idle = force or now - slots.used_at >= IDLE_S
            if idle and slots.held > slots.open:
                jobs.append(self._shrink(key, slots))
            elif idle and slots.open == 0 and slots.held == 0:
                del self._slots[key]
        await _each(jobs)

    async def _shrink(self, key: str, slots: _Slots) -> None:
        """Hold only what is in use (the others' dead holdings are dropped on the way). ``held`` drops
        first, so a connection meanwhile asks the store instead of using a slot being given back."""
        store = self._store
        assert store is not None
        if slots.busy is not None and not slots.busy.done():
            return  # a lease request started since the round began: next round
        now = self._clock()
        given = slots.held - slots.open
        slots.held = slots.open

        def change(value: Value | None) -> Value | None:
            holders = self._others(store, value, now)
            if slots.held:
                holders[store.replica] = slots.held
            return {"h": holders}

        task = asyncio.current_task()
        slots.busy = task
        try:
            await store.modify(kv_key(self.name, key), change)
        except StoreUnavailable:
            slots.held += given
            raise
        finally:
            if slots.busy is task:
                slots.busy = None


# --- failures and lockouts --------------------------------------------------------------------------------


@dataclass
class _Local:
    failures: list[float] = field(default_factory=list)
    until: float = 0.0


class SharedFailures:
    """``limit`` failures of a key within ``window_s`` lock it for ``lockout_s``, counted across replicas.
    A success does not reset the count; failures only expire. :meth:`locked` reads this replica's copy of
    the lockouts (its own, those announced by the others, and those a failure found in the store), so
    checking costs nothing; each failure is one write."""

    def __init__(self, store: LimitStore | None, name: str, *, limit: int, window_s: float, lockout_s: float,
                 clock: Clock = time.time, max_keys: int = MAX_KEYS) -> None:
        self.name = name
        self.limit = limit
        self._window = window_s
        self._lockout = lockout_s
        self._store = store
        self._clock = clock
        self._max_keys = max_keys
        self._locked: OrderedDict[str, float] = OrderedDict()  # key → until
        self._local: OrderedDict[str, _Local] = OrderedDict()  # the local share's counts
        if store is not None:
            store.register(self)

    def locked(self, key: str) -> bool:
        until = self._locked.get(key)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._locked[key]
        return False

    def learn(self, key: str, until: float) -> None:
        if until > self._clock() and until > self._locked.get(key, 0.0):
            self._locked[key] = until
            self._locked.move_to_end(key)
            while len(self._locked) > self._max_keys:
                self._locked.popitem(last=False)

    async def failed(self, key: str) -> bool:
        """Record a failure; True when it locked the key."""
        if not self.limit:
            return False
        now = self._clock()
        if self._store is not None and self._store.usable:
            try:
                return await self._failed_shared(key, now)
            except StoreUnavailable:
                pass
        scale = self._store.replicas() if self._store is not None else 1
        state = _bounded(self._local, key, _Local, self._max_keys)
        locked = self._count(state, now, max(1, self.limit // scale))
        if locked:
            self.learn(key, state.until)
        return locked

    def _count(self, state: _Local, now: float, limit: int) -> bool:
        state.failures = [t for t in state.failures if t > now - self._window][-limit:]
        state.failures.append(now)
        if len(state.failures) < limit:
            return False
        state.failures = []
        state.until = now + self._lockout
        return True

    async def _failed_shared(self, key: str, now: float) -> bool:
        assert self._store is not None
        locked_now = False

        def change(value: Value | None) -> Value | None:
            nonlocal locked_now
            state = _Local([float(t) for t in (value or {}).get("f", [])], float((value or {}).get("u", 0.0)))
            locked_now = False
            if state.until > now:
                return None  # locked already (by a replica whose announcement we missed)
            locked_now = self._count(state, now, self.limit)
            return {"f": state.failures, "u": state.until}

        value, _ = await self._store.modify(kv_key(self.name, key), change)
        until = float((value or {}).get("u", 0.0))
        self.learn(key, until)
        if locked_now:
            await self._store.announce_lock(self.name, key, until)
        return locked_now

    async def sync(self, force: bool) -> None:
        """Nothing is leased; drop expired local entries."""
        now = self._clock()
        for key in [k for k, until in self._locked.items() if until <= now]:
            del self._locked[key]
