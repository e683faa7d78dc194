"""Prometheus metrics of the bounce service."""

from prometheus_client import Counter, Histogram

EVENTS_RECORDED = Counter(
    "postwire_recorder_events_total", "Events from EVENTS committed to PostgreSQL, by type.", ["type"]
)
BATCH_FAILURES = Counter(
    "postwire_recorder_batch_failures_total", "Batches not committed (database unavailable); retried later."
)
BATCH_SECONDS = Histogram("postwire_recorder_batch_seconds", "Time to commit one batch of events.")

# --- the bounce receiver (receiver.py) and forwarding (forwarding.py) ------------------------------------
# Label values are closed sets: results and causes are listed below, reasons are the Sisimai vocabulary
# (postwire.bounces.vocabulary.REASONS; anything else is counted as "undefined").

RECEIVED = Counter(
    "postwire_bounce_received_total",
    "Mail at the bounce MX by result: bounced|complained (an event was published), autoreply, delayed "
    "(a delay notice), not_bounce (a human reply, a success DSN: dropped), rejected (one per refused "
    "RCPT or DATA; the cause is in postwire_bounce_rejected_total).",
    ["result"],
)
REJECTED = Counter(
    "postwire_bounce_rejected_total",
    "Refusals by cause: not_bounce_domain, unknown_address, invalid_return_path (forged or altered VERP), "
    "unknown_message, message_not_recorded, lookup_unavailable, queue_unavailable, too_big, error.",
    ["cause"],
)
REASONS = Counter(
    "postwire_bounce_reasons_total", "Published bounced/complained events by Sisimai reason.", ["reason"]
)
FORWARDED = Counter(
    "postwire_bounce_forwarded_total",
    "Reports forwarded by SMTP to an account's address, by outcome: sent, failed (relay or database "
    "unavailable after the retries), skipped (the sender's RFC 3461 NOTIFY did not ask for it).",
    ["outcome"],
)


def rejected(cause: str) -> None:
    RECEIVED.labels("rejected").inc()
    REJECTED.labels(cause).inc()
