"""Prometheus metrics of bounce forwarding (in the processes that forward: receiver and recorder)."""

from prometheus_client import Counter

FORWARDED = Counter(
    "postwire_bounce_forwarded_total",
    "Reports forwarded to an account's address, by outcome: sent (submitted to INBOUND), failed (NATS or "
    "the database unavailable after the retries), skipped (the sender's RFC 3461 NOTIFY did not ask for "
    "it, or the message had a null sender).",
    ["outcome"],
)
