"""Prometheus metrics of the event recorder."""

from prometheus_client import Counter, Histogram

EVENTS_RECORDED = Counter(
    "postwire_recorder_events_total", "Events from EVENTS committed to PostgreSQL, by type.", ["type"]
)
BATCH_FAILURES = Counter(
    "postwire_recorder_batch_failures_total", "Batches not committed (database unavailable); retried later."
)
BATCH_SECONDS = Histogram("postwire_recorder_batch_seconds", "Time to commit one batch of events.")
