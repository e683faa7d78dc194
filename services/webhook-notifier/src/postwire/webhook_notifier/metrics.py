"""Prometheus metrics of the webhook notifier."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter("postwire_webhook_attempts_total",
                   "Webhook POST attempts by outcome (delivered|failed|refused).", ["outcome"])
PARKED = Counter("postwire_webhook_dead_letters_total",
                 "Deliveries given up after the retry window and parked as dead letters.")
ENQUEUED = Counter("postwire_webhook_enqueued_total", "Deliveries queued by the fan-out (one per endpoint).")
ATTEMPT_SECONDS = Histogram("postwire_webhook_attempt_seconds", "Time of one webhook POST attempt.")
