"""Prometheus metrics of the bounce receiver."""

from prometheus_client import Counter

# Label values are closed sets: results and causes are listed below, reasons are the Sisimai vocabulary
# (postwire.bounce_classifier.vocabulary.REASONS; anything else is counted as "undefined").

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
    "unknown_message, message_not_recorded, lookup_unavailable, queue_unavailable, report_store_unavailable, "
    "too_big, error.",
    ["cause"],
)
DMARC_REPORTS = Counter(
    "postwire_bounce_dmarc_reports_total",
    "Mail to dmarc@<bounce domain> by outcome: stored, duplicate (stored before), unknown_domain (no "
    "account sends from the report's domain: dropped), store_unavailable (451), or the refusal's code "
    "(postwire.dmarc.errors.CODES: not a report, dropped).",
    ["outcome"],
)
REASONS = Counter(
    "postwire_bounce_reasons_total", "Published bounced/complained events by Sisimai reason.", ["reason"]
)
def rejected(cause: str) -> None:
    RECEIVED.labels("rejected").inc()
    REJECTED.labels(cause).inc()
