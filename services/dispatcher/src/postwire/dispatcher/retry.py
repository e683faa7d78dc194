"""The retry schedule: exponential backoff with jitter, capped, bounded by the message lifetime.

The step is the message's age, clamped to [base_s, max_s] — Postfix's queue manager rule
(minimal_backoff_time / maximal_backoff_time). Since the next attempt happens at age + step, each wait is
about as long as all the waiting before it, so waits double: 5, 5, 10, 20, 40 min, … up to max_s. The
schedule depends only on ``accepted_at`` and the clock, which both travel with (or outlive) the message,
so redeliveries, restarts and "not yet due" naks cannot make it skip or repeat a step.

Jitter spreads the retries of a burst deferred together (a provider throttling us) so they do not all
come back in the same second: the delay is drawn from [75 %, 100 %] of the step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# the shortest delay we hand to JetStream: a zero-delay nak would redeliver in a tight loop
MIN_DELAY_S = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float
    lifetime_s: float

    def backoff(self, age_s: float, rng: random.Random | None = None) -> float:
        """Delay before the next attempt of a message that has been queued ``age_s`` seconds."""
        step = min(self.max_s, max(self.base_s, age_s))
        return max(MIN_DELAY_S, step * (rng or random).uniform(0.75, 1.0))

    def expires_at(self, accepted_at: datetime, deadline: datetime | None = None) -> datetime:
        """The message's own deadline (maxdelivertime) when it has one, else acceptance + lifetime."""
        return deadline if deadline is not None else accepted_at + timedelta(seconds=self.lifetime_s)

    def next_delay(self, accepted_at: datetime, now: datetime, rng: random.Random | None = None,
                   deadline: datetime | None = None) -> float | None:
        """Seconds until the next attempt, or None when the message has outlived its lifetime.

        The last retry is pulled in to the expiry time, so a message is tried once more at the end of its
        life instead of expiring in the middle of a long backoff step."""
        remaining = (self.expires_at(accepted_at, deadline) - now).total_seconds()
        if remaining <= 0:
            return None
        age = max(0.0, (now - accepted_at).total_seconds())
        return max(MIN_DELAY_S, min(self.backoff(age, rng), remaining))
