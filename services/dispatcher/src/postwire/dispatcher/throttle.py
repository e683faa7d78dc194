"""Provider budgets: the live limits of one provider (or one default MX host) and their adaptive backoff.

Keying. A named provider (``google``, ``yahoo``, …) has one budget for every MX host it matches, so all
the domains that share its MX hosts share its connections and its rate. MX hosts no provider matches each
get their own budget from the ``default`` rule (key ``default:<mx host>``): two unrelated small domains
must not throttle each other, and a domain is served by its MX host anyway. Metrics always say the
provider name (``default`` for all of those), so the label set stays bounded.

Pacing is virtual scheduling (GCRA without burst): each message reserves the next free slot, slots are
``1/rate`` apart, and the reserver sleeps until its slot. No polling, and a cut in the rate applies to the
next reservation. Callers hold a connection while they wait, so at most ``max_connections`` reservations
are outstanding per budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Callable

import structlog

from postwire.core.lanes import BULK, TRANSACTIONAL
from postwire.core.lifecycle import background
from postwire.dispatcher import metrics
from postwire.dispatcher.outcomes import Reply
from postwire.dispatcher.shaping import DEFAULT, Rule, ShapingRules

log = structlog.get_logger(__name__)

# how often budgets are checked for recovery and the gauges refreshed
TICK_S = 0.25
# a default-rule budget unused this long (and not backed off) is forgotten
FORGET_IDLE_S = 600.0


# how far a pacer may run ahead of its schedule to make up for callers that came late (GCRA's tolerance)
PACER_TOLERANCE_S = 0.25


class Pacer:
    """Spaces events ``1/rate`` seconds apart across all callers (a GCRA); ``rate`` None = no pacing.

    A slot nobody was ready for is not simply lost: up to ``PACER_TOLERANCE_S`` of lateness is made up by
    letting the next events through sooner, so the long-run rate is the configured one, never more."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._tat = 0.0  # theoretical arrival time of the next event

    async def take(self) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        tat = max(now, self._tat)
        self._tat = tat + 1.0 / self.rate
        at = tat - PACER_TOLERANCE_S
        if at > now:
            await asyncio.sleep(at - now)


# ready-queue size per budget: READY_PER_CONNECTION messages per allowed connection, at least READY_FLOOR
READY_PER_CONNECTION = 4
READY_FLOOR = 8
# a parked message comes back after at least PARK_FLOOR_S and at most PARK_MAX_S; after PARK_MIN_S when
# nothing tells how fast the budget drains (no message sent yet, no rate limit)
PARK_FLOOR_S = 0.25
PARK_MIN_S = 2.0
PARK_MAX_S = 60.0
# how long a parked message takes to come back through the retry subject when the machine is busy: the
# queue it returns to should still hold that much work
PARK_LEAD_S = 0.5
# the longest a parked bulk message stays away: a backlog longer than this many seconds of the provider's
# rate comes back (and is parked again, at the end of the line) once in this time
BULK_PARK_MAX_S = 3600.0
# how much one message's time in a session moves the budget's estimate of it
SEND_TIME_WEIGHT = 0.2


class BudgetFull(Exception):
    """The budget's ready queue is full: park the message instead of holding a sender slot."""

    def __init__(self, budget: Budget) -> None:
        super().__init__(budget.provider)
        self.budget = budget


class Budget:
    """Live limits of one provider key: the rule's values scaled down by the backoff level."""

    def __init__(self, provider: str, key: str, rule: Rule, on_change: Callable[[Budget], None],
                 ready_cap: int | None = None) -> None:
        self.provider = provider
        self.ready_cap = ready_cap
        self.key = key
        self.rule = rule
        self.level = 0
        self.messages = Pacer(rule.message_rate)
        self.connects = Pacer(rule.connection_rate)
        self.last_used = time.monotonic()
        self.ready = 0  # messages inside a lease: waiting for a session or a rate slot, or sending
        self.ready_transactional = 0  # of which transactional: they have a ready queue of their own
        self._bulk_park_tat = 0.0  # when the last parked bulk message is due back
        self.send_s: float | None = None  # how long a message holds a session (moving average)
        self._park_tat = 0.0  # when the last parked message is due back
        self._on_change = on_change
        self._last_throttle = -math.inf
        self._last_change = -math.inf
        self._recovering = False

    @property
    def max_connections(self) -> int:
        return max(1, math.floor(self.rule.max_connections * self.rule.backoff.factor ** self.level))

    @property
    def max_ready(self) -> int:
        """How many messages may wait on this budget at once (KumoMTA's ready queue): enough to keep
        every connection busy, few enough that a slow provider cannot hold the sender's slots: never more
        than ``ready_cap`` (a share of the sender's concurrency), but always one per allowed connection."""
        wanted = max(READY_FLOOR, READY_PER_CONNECTION * self.max_connections)
        if self.ready_cap is None:
            return wanted
        return max(self.max_connections, min(wanted, self.ready_cap))

    def admits(self, lane: str) -> bool:
        """Room in the ready queue for one more message of ``lane``. Bulk mail fills the budget's queue
        (transactional messages in it count); transactional mail has a queue of the same size of its own,
        so a bulk backlog never makes a transactional message wait in the retry subject."""
        if lane == TRANSACTIONAL:
            return self.ready_transactional < self.max_ready
        return self.ready < self.max_ready

    def enter(self, lane: str) -> None:
        self.ready += 1
        if lane == TRANSACTIONAL:
            self.ready_transactional += 1

    def leave(self, lane: str) -> None:
        self.ready -= 1
        if lane == TRANSACTIONAL:
            self.ready_transactional -= 1

    def sent(self, seconds: float) -> None:
        """A message held a session this long (its transaction, whatever came of it)."""
        self.send_s = seconds if self.send_s is None else (
            (1 - SEND_TIME_WEIGHT) * self.send_s + SEND_TIME_WEIGHT * seconds)

    @property
    def capacity(self) -> float | None:
        """Messages a second this budget's connections can take: their number over the time a message
        holds one; None before a message was sent. (Only asked of budgets without a rate limit.)"""
        return self.max_connections / self.send_s if self.send_s else None

    def park_delay(self, now: float | None = None, waited: bool = False, lane: str = TRANSACTIONAL) -> float:
        """When a parked message should come back.

        A budget with a rate limit: about when the queue ahead of it has drained at that rate
        (``max_ready / rate``, 2 to 60 s, jittered). The parked messages come back together and keep the
        queue full, so the provider gets its whole rate even on a busy machine.

        A budget without one (bounded by its connections only): once the queue ahead of it, and the
        messages parked before it, will have drained at its measured capacity (connections over the time
        a message holds one) to half a second of work (at least half the queue), one capacity slot after
        the message parked before it; one that ``waited`` already returns at the head of the line. A
        fast destination's burst then waits a tenth of a second for room, not the seconds of a fixed
        delay; a destination that takes a minute per message keeps them away for a minute."""
        now = time.monotonic() if now is None else now
        rate = self.message_rate
        if rate is not None and lane == BULK and not waited:
            return self._bulk_park_delay(now, rate)
        if rate is not None:
            return min(PARK_MAX_S, max(PARK_MIN_S, self.max_ready / rate)) * random.uniform(0.75, 1.5)
        capacity = self.capacity
        if capacity is None:
            return PARK_MIN_S * random.uniform(0.75, 1.5)
        keep = min(self.max_ready - 1, max(self.max_ready / 2, capacity * PARK_LEAD_S))
        head = now + max(0.0, self.ready - keep) / capacity
        if waited:
            due = head
        else:
            due = max(head, self._park_tat)
            self._park_tat = due + 1 / capacity
        # a little jitter within the message's own slot: replicas parking at once do not come back at once
        return min(PARK_MAX_S, max(PARK_FLOOR_S, due - now + random.uniform(0, 0.5 / capacity)))

    def _bulk_park_delay(self, now: float, rate: float) -> float:
        """A bulk backlog is spread out at the budget's rate: each parked message is due one rate slot
        after the one parked before it (after the usual delay when none is waiting). A backlog of
        thousands then waits in the retry subject, each message read again about when its turn comes,
        instead of all of them coming back every few seconds to find the queue still full. One that
        comes back too early (``waited``) gets the usual delay: that costs about one re-read per
        message the provider takes, not one per message of the backlog."""
        base = min(PARK_MAX_S, max(PARK_MIN_S, self.max_ready / rate)) * random.uniform(0.75, 1.5)
        due = max(now + base, self._bulk_park_tat)
        self._bulk_park_tat = due + 1 / rate
        return min(BULK_PARK_MAX_S, due - now)

    @property
    def message_rate(self) -> float | None:
        rate = self.rule.message_rate
        return None if rate is None else rate * self.rule.backoff.factor ** self.level

    @property
    def connection_rate(self) -> float | None:
        rate = self.rule.connection_rate
        return None if rate is None else rate * self.rule.backoff.factor ** self.level

    def throttle(self, reason: str, now: float | None = None) -> bool:
        """A throttling reply: cut one level unless one was cut just now. True when it cut."""
        now = time.monotonic() if now is None else now
        self._last_throttle = now
        self._recovering = False
        backoff = self.rule.backoff
        if now - self._last_change < backoff.settle or self.level >= backoff.max_level:
            return False
        self._set_level(self.level + 1, reason, now)
        return True

    def tick(self, now: float | None = None) -> None:
        """Recover one level when due: ``duration`` after the last throttle, then every step."""
        if self.level == 0:
            return
        now = time.monotonic() if now is None else now
        backoff = self.rule.backoff
        if now - self._last_throttle < backoff.duration:
            return
        if self._recovering and now - self._last_change < backoff.recovery_step:
            return
        self._recovering = True
        self._set_level(self.level - 1, "recovery", now)

    def _set_level(self, level: int, reason: str, now: float) -> None:
        old_rate, old_conns = self.message_rate, self.max_connections
        self.level = level
        self._last_change = now
        self.messages.rate = self.message_rate
        self.connects.rate = self.connection_rate
        log.warning("shaping.budget_changed", provider=self.provider, key=self.key, level=level,
                    old_rate=old_rate, new_rate=self.message_rate, old_connections=old_conns,
                    new_connections=self.max_connections, reason=reason)
        metrics.BUDGET_CHANGES.labels(self.provider, "cut" if reason != "recovery" else "recovery").inc()
        self._on_change(self)


class Shaper:
    """All budgets of this process, chosen by MX host; ticks recovery and exports the gauges."""

    def __init__(self, rules: ShapingRules, ready_cap: int | None = None) -> None:
        self.rules = rules
        self._ready_cap = ready_cap
        self._budgets: dict[str, Budget] = {}
        self._listeners: list[Callable[[Budget], None]] = []

    def provider_for(self, mx_host: str) -> str:
        return self.rules.provider_for(mx_host)

    def budget_for(self, mx_host: str) -> Budget:
        provider = self.rules.provider_for(mx_host)
        key = provider if provider != DEFAULT else f"{DEFAULT}:{mx_host.lower().rstrip('.')}"
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = Budget(provider, key, self.rules.rule(provider), self._changed,
                                                 self._ready_cap)
        budget.last_used = time.monotonic()
        return budget

    def on_change(self, listener: Callable[[Budget], None]) -> None:
        """``listener(budget)`` runs after every level change (the pool wakes its waiters)."""
        self._listeners.append(listener)

    def observe(self, budget: Budget, reply: Reply) -> bool:
        """Feed a server reply; True when it is a throttling reply (counted, and the budget may be cut)."""
        if not reply.code or not budget.rule.backoff.matches(reply.text):
            return False
        metrics.THROTTLED.labels(budget.provider).inc()
        budget.throttle(reply.text[:200])
        return True

    def _changed(self, budget: Budget) -> None:
        for listener in self._listeners:
            listener(budget)
        self.export()

    async def run(self) -> None:
        """Recovery and gauges, until cancelled."""
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for budget in list(self._budgets.values()):
            budget.tick(now)
        self._forget_idle(now)
        self.export()

    def _forget_idle(self, now: float) -> None:
        stale = [k for k, b in self._budgets.items()
                 if b.provider == DEFAULT and b.level == 0 and now - b.last_used > FORGET_IDLE_S]
        for key in stale:
            del self._budgets[key]

    def export(self) -> None:
        """Per provider: allowed rate and connections, backoff level. For ``default`` (many budgets)
        the most backed-off one is shown: that is the one an operator needs to see."""
        worst: dict[str, Budget] = {}
        for budget in self._budgets.values():
            seen = worst.get(budget.provider)
            if seen is None or budget.level > seen.level:
                worst[budget.provider] = budget
        for provider, budget in worst.items():
            metrics.ALLOWED_RATE.labels(provider).set(budget.message_rate or 0.0)
            metrics.ALLOWED_CONNECTIONS.labels(provider).set(budget.max_connections)
            metrics.BACKOFF_LEVEL.labels(provider).set(budget.level)


@contextlib.asynccontextmanager
async def running(shaper: Shaper) -> AsyncIterator[None]:
    """Run the shaper's ticker for the duration of the block."""
    async with background(shaper.run()):
        yield
