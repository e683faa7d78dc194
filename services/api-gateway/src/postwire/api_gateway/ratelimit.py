"""Per-account API rate limits and send quotas: token buckets shared by every gateway replica.

Two independent limits, both off by default (0), both answering ``429`` with ``Retry-After`` (whole
seconds) and the usual JSON error body:

* **Request rate** (``POSTWIRE_API_RATE_PER_S``, ``POSTWIRE_API_BURST``): every authenticated ``/v1``
  request of an account takes one token from its bucket; the bucket holds ``burst`` tokens and refills at
  ``rate`` per second. ``error`` is ``rate_limited``. Checked right after the API key is verified, so a
  request without a valid key costs nothing (and says nothing about which accounts exist).
* **Send quota** (``POSTWIRE_API_SEND_QUOTA_PER_HOUR``, ``…_PER_DAY``): the recipients of
  every accepted message (POST /v1/messages, /v1/messages/mime, /v1/send, /v1/resend) are taken from an
  hourly and a daily bucket, each holding its quota and refilling it evenly over its period (a sliding
  window: never more than the quota in any hour, resp. day, after a full bucket). Taken only when the
  whole message fits in both, and given back if the queue then refuses it (503), so a 429 means nothing
  was queued. ``error`` is ``send_quota_exceeded``. A message with more recipients than a quota can ever
  hold is a ``422 too_many_recipients`` instead: waiting would not help. Idempotent replays are free.

The buckets are shared by every gateway replica (``postwire.core.sharedlimits``, docs/limits.md): kept
in the NATS KV bucket LIMITS and leased, so across N replicas an account gets the configured figures,
not N times them, and a request served from a replica's lease costs no round trip. If NATS cannot be
reached, each replica allows its share (the figures divided by the live replicas last seen).
"""

from __future__ import annotations

import math
import time

from postwire.api_gateway import metrics
from postwire.api_gateway.errors import ApiError, InvalidInput
from postwire.core.sharedlimits import Clock, LimitStore, SharedBuckets

HOUR = 3600.0
DAY = 86400.0


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class RequestRate:
    """The per-account request rate limit (0 rate: no limit)."""

    def __init__(self, rate_per_s: float, burst: int, store: LimitStore | None = None,
                 clock: Clock = time.time) -> None:
        self._buckets = (SharedBuckets(store, "api.rate", [(rate_per_s, max(1, burst))], clock=clock)
                         if rate_per_s > 0 else None)

    async def check(self, account_id: str) -> None:
        if self._buckets is None:
            return
        wait = await self._buckets.take(account_id, 1)
        if wait > 0:
            metrics.REJECTED.labels("rate_limited").inc()
            [(rate, burst)] = self._buckets.windows
            raise ApiError(429, "rate_limited", f"too many requests for this account: at most "
                           f"{rate:g} per second (bursts of {burst:g}); "
                           "retry after Retry-After seconds", retry_after(wait))


class SendQuota:
    """Recipients per hour and per day for each account (0: unlimited), one bucket with two windows."""

    def __init__(self, per_hour: int, per_day: int, store: LimitStore | None = None,
                 clock: Clock = time.time) -> None:
        quotas = [(q, period, name) for q, period, name in ((per_hour, HOUR, "hour"), (per_day, DAY, "day"))
                  if q > 0]
        self._what = [(f"{q} recipients per {name}", q) for q, _, name in quotas]
        self._buckets = (SharedBuckets(store, "api.quota", [(q / period, q) for q, period, _ in quotas],
                                       clock=clock) if quotas else None)

    async def take(self, account_id: str, recipients: int) -> None:
        """Charge ``recipients`` to the account, or raise (429, or 422 when it can never fit)."""
        if self._buckets is None:
            return
        for what, quota in self._what:
            if recipients > quota:
                raise InvalidInput(("body",), f"{recipients} recipients exceed this account's send quota "
                                   f"of {what}", "too_many_recipients")
        wait = await self._buckets.take(account_id, recipients)
        if wait > 0:
            metrics.REJECTED.labels("quota_exceeded").inc()
            quotas = " and ".join(what for what, _ in self._what)
            raise ApiError(429, "send_quota_exceeded", f"this account's send quota ({quotas}) is used up; "
                           "nothing was queued, retry after Retry-After seconds", retry_after(wait))

    def give_back(self, account_id: str, recipients: int) -> None:
        """The queue refused the message after all: it does not count."""
        if self._buckets is not None:
            self._buckets.give_back(account_id, recipients)
