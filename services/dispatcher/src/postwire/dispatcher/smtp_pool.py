"""Connection reuse under provider budgets: open SMTP sessions, counted per budget, lent out one
transaction at a time.

A burst to one domain costs a handful of connections instead of one per message, which is what receiving
MTAs expect and what their throttles count. Limits come from the budget (``throttle.Budget``), so they
hold per provider across every domain and MX host it serves:

- at most ``budget.max_connections`` sessions exist (idle, lent or opening); callers wait for one to come
  back rather than open more. When a cut lowers the limit, surplus sessions are closed as they return;
  an idle session to another MX host of the same budget is closed to make room for the host needed now;
- new sessions are paced by ``budget.connects`` (connection_rate);
- each session carries at most ``rule.max_messages_per_connection`` transactions (QUIT after the last)
  and is closed with QUIT after ``idle_s`` unused;
- a lease is granted only when ``budget.messages`` (message_rate) gives the next slot, and the caller
  holds its session while it waits, so outstanding reservations never exceed the connection limit;
- at most ``budget.max_ready`` messages are inside leases of one budget; one more gets BudgetFull at
  once (the sender parks it), so a slow or throttled provider cannot take every sender slot;
- lanes (postwire.core.lanes): transactional messages have a ready queue of their own beside the
  budget's (bulk mail cannot fill it), and a session coming free goes to a waiting transactional message
  before any bulk one (but bulk gets one in every BULK_TURN + 1 while both wait). Both lanes share the
  budget's connections and rate; a transactional message waits for about the sessions already lent,
  never behind the bulk messages waiting for one.

Waiting is on futures woken by releases and by budget changes (a recovery raises the limit): no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from postwire.core.lanes import BULK, TRANSACTIONAL, lane_of
from postwire.dispatcher import metrics
from postwire.dispatcher.smtp_client import ClientConfig, ConnectFailure, SmtpConnection, TlsFailure
from postwire.dispatcher.throttle import Budget, BudgetFull

log = structlog.get_logger(__name__)

HostKey = tuple[str, int]
# within a budget, transactional messages get the sessions that come free before bulk ones, but at most
# this many in a row while bulk waits (as the weighted choice of slots, postwire.dispatcher.lanes)
BULK_TURN = 8


@dataclass
class _Group:
    """Sessions of one budget: idle ones per (MX host, port), and how many exist in all."""

    idle: dict[HostKey, list[SmtpConnection]] = field(default_factory=dict)
    count: int = 0
    # waiting for a session, per lane: transactional ones are woken first, except that a waiting bulk
    # one gets every (BULK_TURN + 1)th session that comes free, so neither lane starves
    waiters: dict[str, deque[asyncio.Future[None]]] = field(
        default_factory=lambda: {TRANSACTIONAL: deque(), BULK: deque()})
    retiring: set[asyncio.Task[None]] = field(default_factory=set)  # QUITs under way (still counted)
    streak: int = 0  # transactional wakes in a row while bulk was waiting

    def wake(self, everyone: bool = False) -> None:
        order = (TRANSACTIONAL, BULK)
        if self.streak >= BULK_TURN and self._live(BULK):
            order = (BULK, TRANSACTIONAL)
        for lane in order:
            waiters = self.waiters[lane]
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    self.streak = self.streak + 1 if lane == TRANSACTIONAL and self._live(BULK) else 0
                    if not everyone:
                        return

    def _live(self, lane: str) -> bool:
        return any(not w.done() for w in self.waiters[lane])

    def transactional_waiting(self) -> bool:
        return self._live(TRANSACTIONAL)

    def pop_idle_elsewhere(self, key: HostKey) -> SmtpConnection | None:
        for other, conns in self.idle.items():
            if other != key and conns:
                return conns.pop(0)  # the least recently used
        return None


class ConnectionPool:
    def __init__(self, cfg: ClientConfig, *, idle_s: float) -> None:
        self._cfg = cfg
        self._idle_s = idle_s
        self._groups: dict[str, _Group] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle())

    def budget_changed(self, budget: Budget) -> None:
        """A budget's limits moved: waiters re-check (a raised limit lets them open sessions)."""
        group = self._groups.get(budget.key)
        if group is not None:
            group.wake(everyone=True)

    @contextlib.asynccontextmanager
    async def lease(self, budget: Budget, mx_host: str, port: int, addresses: list[str],
                    fresh: bool = False, lane: str = TRANSACTIONAL) -> AsyncIterator[SmtpConnection]:
        """A session with ``mx_host`` (reused, or new across ``addresses`` in order; always new when
        ``fresh``) whose next message is within the budget's rate; raises ConnectFailure when no address
        gives one, and BudgetFull at once when the lane's ready queue is full."""
        lane = lane_of(lane)
        if not budget.admits(lane):
            raise BudgetFull(budget)
        budget.enter(lane)
        try:
            async with self._lease(budget, mx_host, port, addresses, fresh, lane) as conn:
                yield conn
        finally:
            budget.leave(lane)

    @contextlib.asynccontextmanager
    async def _lease(self, budget: Budget, mx_host: str, port: int, addresses: list[str],
                     fresh: bool, lane: str) -> AsyncIterator[SmtpConnection]:
        group = self._groups.setdefault(budget.key, _Group())
        conn = await self._acquire(group, budget, (mx_host, port), addresses, fresh, lane)
        try:
            await budget.messages.take()
        except BaseException:
            self._release(group, budget, (mx_host, port), conn)  # unused: it goes back as it was
            raise
        started = time.monotonic()
        try:
            yield conn
        except BaseException:
            budget.sent(time.monotonic() - started)
            await self._discard(group, conn)  # interrupted mid-transaction: the session state is unknown
            raise
        budget.sent(time.monotonic() - started)
        self._release(group, budget, (mx_host, port), conn)

    async def _acquire(self, group: _Group, budget: Budget, key: HostKey, addresses: list[str],
                       fresh: bool, lane: str) -> SmtpConnection:
        # a reused session goes straight to its next MAIL: no RSET probe first (a session the server closed
        # while idle is noticed by then, or the transaction reports it untouched and the deliverer retries)
        reused = await self._take_idle_or_slot(group, budget, key, fresh, lane)
        if lane == TRANSACTIONAL and group.waiters[BULK]:
            group.wake()  # bulk held back while we waited: let the next in line look again
        if reused is not None:
            return reused
        try:
            await budget.connects.take()
            conn = await self._open(budget, key, addresses)
        except BaseException:
            group.count -= 1
            group.wake()
            raise
        conn.provider = budget.provider
        metrics.PROVIDER_CONNECTIONS.labels(budget.provider).inc()
        return conn

    async def _take_idle_or_slot(self, group: _Group, budget: Budget, key: HostKey,
                                 fresh: bool = False, lane: str = TRANSACTIONAL) -> SmtpConnection | None:
        """An idle session to this host (most recently used first; not when ``fresh``), or None after
        reserving room for a new one. No await between a check and its update, so no lock is needed.
        A bulk message arriving leaves whatever is free to a transactional one that is waiting already;
        once it has waited, the pool's wake order (``_Group.wake``) decides."""
        queued = False
        while True:
            if lane == BULK and not queued and group.transactional_waiting():
                queued = True
                await self._wait(group, lane)
                continue
            self._shed_surplus(group, budget)
            idle = group.idle.get(key, [])
            if fresh and idle and group.count >= budget.max_connections:
                self._retire(group, idle.pop(0))  # make room for the new session this caller needs
                await self._wait(group, lane)
                continue
            while idle and not fresh:
                conn = idle.pop()
                if conn.is_connected:
                    return conn
                group.count -= 1
                conn.close()
            if group.count < budget.max_connections:
                group.count += 1
                return None
            other = group.pop_idle_elsewhere(key)
            if other is not None:  # room for this host at the expense of an idle one elsewhere
                self._retire(group, other)
                continue
            await self._wait(group, lane)

    def _shed_surplus(self, group: _Group, budget: Budget) -> None:
        """After a cut, close idle sessions above the new limit instead of reusing them."""
        for conns in group.idle.values():
            surplus = group.count - budget.max_connections - len(group.retiring)
            while conns and surplus > 0:
                surplus -= 1
                self._retire(group, conns.pop(0))

    @staticmethod
    async def _wait(group: _Group, lane: str) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        group.waiters[lane].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                group.wake()  # we were woken but will not use it: pass the turn on
            raise

    def _config(self, budget: Budget) -> ClientConfig:
        rule = budget.rule
        return dataclasses.replace(self._cfg, require_tls=rule.tls == "required",
                                   tls_verify=self._cfg.tls_verify or rule.tls_verify)

    async def _open(self, budget: Budget, key: HostKey, addresses: list[str]) -> SmtpConnection:
        """Try each address in order; a failed STARTTLS handshake is retried once in plain text unless
        the rule requires TLS."""
        mx_host, port = key
        cfg = self._config(budget)
        failure: ConnectFailure | None = None
        for address in addresses:
            try:
                return await SmtpConnection.open(mx_host, address, port, cfg)
            except TlsFailure as e:
                failure = e
                if cfg.require_tls:
                    log.warning("smtp.tls_failed_required", mx_host=mx_host, address=address, error=str(e))
                    continue
                log.warning("smtp.tls_failed_retrying_plain", mx_host=mx_host, address=address, error=str(e))
                try:
                    return await SmtpConnection.open(mx_host, address, port, cfg, use_tls=False)
                except ConnectFailure as e2:
                    failure = e2
            except ConnectFailure as e:
                log.info("smtp.connect_failed", mx_host=mx_host, address=address, error=str(e))
                failure = e
        assert failure is not None, "no addresses to connect to"
        raise failure

    def _release(self, group: _Group, budget: Budget, key: HostKey, conn: SmtpConnection) -> None:
        keep = (not self._closed and conn.healthy and conn.is_connected
                and conn.messages < budget.rule.max_messages_per_connection
                and group.count <= budget.max_connections)
        if keep:
            conn.last_used = time.monotonic()
            group.idle.setdefault(key, []).append(conn)
            group.wake()
        else:
            self._retire(group, conn)

    async def _discard(self, group: _Group, conn: SmtpConnection) -> None:
        self._retire(group, conn)

    def _retire(self, group: _Group, conn: SmtpConnection) -> None:
        """QUIT without making the caller (about to ack a message) wait for the server's goodbye. The
        session's slot is freed only once it is closed: a provider never sees more than
        max_connections sessions, not even for the moment a QUIT and a new connect overlap."""
        task = asyncio.create_task(conn.quit())
        self._closing.add(task)
        group.retiring.add(task)

        def closed(t: asyncio.Task[None]) -> None:
            self._closing.discard(t)
            group.retiring.discard(t)
            group.count -= 1
            group.wake()

        task.add_done_callback(closed)

    async def _reap_idle(self) -> None:
        interval = max(0.05, min(self._idle_s / 2, 5.0))
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self._idle_s
            for group in self._groups.values():
                for key, idle in group.idle.items():
                    stale = [c for c in idle if c.last_used <= deadline or not c.is_connected]
                    if not stale:
                        continue
                    group.idle[key] = [c for c in idle if c not in stale]
                    for conn in stale:
                        self._retire(group, conn)

    async def close(self) -> None:
        """QUIT every idle session; sessions still lent out are closed when they come back."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for group in self._groups.values():
            for key, idle in list(group.idle.items()):
                group.idle[key] = []
                for conn in idle:
                    self._retire(group, conn)
            group.wake(everyone=True)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=10)
