"""Notifier settings (env prefix POSTWIRE_WEBHOOK_…); the SSRF switches POSTWIRE_WEBHOOK_ALLOW_HTTP and
POSTWIRE_WEBHOOK_ALLOW_PRIVATE come from the base, because the api-gateway enforces them too."""

from __future__ import annotations

from pydantic import Field

from postwire.core.settings import PostwireSettings
from postwire.db.webhooks import UrlPolicy

DAY = 24 * 3600.0


class WebhookSettings(PostwireSettings):
    # one attempt: connect, send, and the response status; the body is never read
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # keep retrying a delivery this long after it was first queued, then park it as a dead letter
    webhook_retry_window_s: float = Field(default=DAY, gt=0)
    # backoff after the n-th failed attempt: base * 2**(n-1), capped, with ±25 % jitter
    webhook_backoff_base_s: float = Field(default=10.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    # concurrent POSTs per endpoint (across replicas for fresh deliveries); 1 = in order while healthy
    webhook_concurrency: int = Field(default=4, ge=1, le=64)
    # failed deliveries of one endpoint waiting for their next attempt (held by JetStream timers)
    webhook_retry_max_pending: int = Field(default=10_000, ge=1)
    # how long an endpoint's URL and secret are cached
    webhook_cache_ttl_s: float = Field(default=10.0, ge=0)
    # how often the notifier syncs the fan-out's filter and its endpoint workers with the webhooks table:
    # the events of a new webhook reach it at the latest this long after it was created
    webhook_reconcile_s: float = Field(default=5.0, gt=0)
    # the fan-out reads only the EVENTS subjects of accounts (and types) with webhooks, up to this many
    # subjects; beyond it, every event (the filter lives in the consumer's configuration)
    webhook_fanout_max_subjects: int = Field(default=500, ge=1)
    # events fetched from EVENTS per batch by the fan-out
    webhook_fanout_batch: int = Field(default=128, ge=1)
    # how long an idle endpoint's pull request waits; bounds shutdown time too
    webhook_fetch_wait_s: float = Field(default=2.0, gt=0)

    # the attempts log ("recent deliveries", webhook_attempts): written in batches this often, kept this long
    webhook_log_flush_s: float = Field(default=1.0, gt=0)
    webhook_log_days: float = Field(default=7.0, gt=0)

    def url_policy(self) -> UrlPolicy:
        return UrlPolicy(allow_http=self.webhook_allow_http, allow_private=self.webhook_allow_private)
