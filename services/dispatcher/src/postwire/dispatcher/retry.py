"""The retry schedule: exponential backoff with jitter, capped, bounded by the message lifetime.

Jitter spreads the retries of a burst that was deferred together (a provider throttling us) so they do
not all come back in the same second. The delay is drawn from [75 %, 100 %] of the capped exponential
step, so the schedule never grows past ``retry_max_s`` and never shrinks below three quarters of a step.
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

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after the failed attempt number ``attempt`` (0 = the first delivery attempt)."""
        step = min(self.max_s, self.base_s * 2.0 ** min(max(attempt, 0), 62))
        return max(MIN_DELAY_S, step * (rng or random).uniform(0.75, 1.0))

    def expires_at(self, accepted_at: datetime) -> datetime:
        return accepted_at + timedelta(seconds=self.lifetime_s)

    def next_delay(self, attempt: int, accepted_at: datetime, now: datetime,
                   rng: random.Random | None = None) -> float | None:
        """Seconds until the next attempt, or None when the message has outlived its lifetime.

        The last retry is pulled in to the expiry time, so a message is tried once more at the end of its
        life instead of expiring in the middle of a long backoff step."""
        remaining = (self.expires_at(accepted_at) - now).total_seconds()
        if remaining <= 0:
            return None
        return max(MIN_DELAY_S, min(self.backoff(attempt, rng), remaining))
