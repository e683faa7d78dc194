"""Per-account API rate limits and send quotas: token buckets in this replica's memory.

Two independent limits, both off by default (0), both answering ``429`` with ``Retry-After`` (whole
seconds) and the usual JSON error body:

* **Request rate** (``POSTWIRE_API_RATE_PER_S``, ``POSTWIRE_API_BURST``): every authenticated ``/v1``
  request of an account takes one token from its bucket; the bucket holds ``burst`` tokens and refills at
  ``rate`` per second. ``error`` is ``rate_limited``. Checked right after the API key is verified, so a
  request without a valid key costs nothing (and says nothing about which accounts exist).
* **Send quota** (``POSTWIRE_SEND_QUOTA_PER_HOUR``, ``POSTWIRE_SEND_QUOTA_PER_DAY``): the recipients of
  every accepted message (POST /v1/messages, /v1/messages/mime, /v1/send, /v1/resend) are taken from an
  hourly and a daily bucket, each holding its quota and refilling it evenly over its period (a sliding
  window: never more than the quota in any hour, resp. day, after a full bucket). Taken only when the
  whole message fits in both, and given back if the queue then refuses it (503), so a 429 means nothing
  was queued. ``error`` is ``send_quota_exceeded``. A message with more recipients than a quota can ever
  hold is a ``422 too_many_recipients`` instead: waiting would not help. Idempotent replays are free.

The buckets live in this process: with N replicas behind a load balancer an account can get up to N
times the configured figures (divide them by the replica count, or pin accounts to replicas). Restarts
refill every bucket. That keeps the check free of network round trips; a shared counter (NATS KV) would
cost two per request. Memory is one small entry per account that has used the API since the start,
and idle entries are pruned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from postwire.api_gateway import metrics
from postwire.api_gateway.errors import ApiError, InvalidInput

Clock = Callable[[], float]
HOUR = 3600.0
DAY = 86400.0
# idle buckets are dropped once this many accounts have one (a full bucket carries no information)
_PRUNE_AT = 10_000


@dataclass
class Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per key; ``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, capacity: float, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}

    def _level(self, key: str, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[key] = Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.at) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]

    def wait_for(self, key: str, n: float) -> float:
        """Seconds until ``n`` tokens are available (0: now). Takes nothing."""
        bucket = self._level(key, self._clock())
        missing = n - bucket.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, key: str, n: float) -> None:
        self._level(key, self._clock()).tokens -= n

    def give_back(self, key: str, n: float) -> None:
        bucket = self._level(key, self._clock())
        bucket.tokens = min(self.capacity, bucket.tokens + n)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class RequestRate:
    """The per-account request rate limit (``None`` rate: no limit)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._buckets = TokenBuckets(rate_per_s, max(1, burst), clock) if rate_per_s > 0 else None

    def check(self, account_id: str) -> None:
        if self._buckets is None:
            return
        wait = self._buckets.wait_for(account_id, 1)
        if wait > 0:
            metrics.REJECTED.labels("rate_limited").inc()
            raise ApiError(429, "rate_limited", f"too many requests for this account: at most "
                           f"{self._buckets.rate:g} per second (bursts of {self._buckets.capacity:g}); "
                           "retry after Retry-After seconds", retry_after(wait))
        self._buckets.take(account_id, 1)


class SendQuota:
    """Recipients per hour and per day for each account (0: unlimited)."""

    def __init__(self, per_hour: int, per_day: int, clock: Clock = time.monotonic) -> None:
        self._windows = [(f"{q} recipients per {name}", TokenBuckets(q / period, q, clock))
                         for q, period, name in ((per_hour, HOUR, "hour"), (per_day, DAY, "day")) if q > 0]

    def take(self, account_id: str, recipients: int) -> None:
        """Charge ``recipients`` to the account, or raise (429, or 422 when it can never fit)."""
        if not self._windows:
            return
        wait = 0.0
        for what, buckets in self._windows:
            if recipients > buckets.capacity:
                raise InvalidInput(("body",), f"{recipients} recipients exceed this account's send quota "
                                   f"of {what}", "too_many_recipients")
            wait = max(wait, buckets.wait_for(account_id, recipients))
        if wait > 0:
            metrics.REJECTED.labels("quota_exceeded").inc()
            quota = " and ".join(what for what, _ in self._windows)
            raise ApiError(429, "send_quota_exceeded", f"this account's send quota ({quota}) is used up; "
                           "nothing was queued, retry after Retry-After seconds", retry_after(wait))
        for _, buckets in self._windows:
            buckets.take(account_id, recipients)

    def give_back(self, account_id: str, recipients: int) -> None:
        """The queue refused the message after all: it does not count."""
        for _, buckets in self._windows:
            buckets.give_back(account_id, recipients)
