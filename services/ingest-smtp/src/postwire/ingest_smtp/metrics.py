"""Prometheus metrics of ingest-smtp (served on the ops port's /metrics).

postwire_ingest_smtp_connections_total          counter   SMTP connections accepted.
postwire_ingest_smtp_connections_active         gauge     SMTP connections open now.
postwire_ingest_smtp_auth_total{mechanism,result}
                                                counter   AUTH attempts; result: success | failure | tempfail
                                                          | locked (refused unchecked during a lockout).
postwire_ingest_smtp_auth_cache_hits_total      counter   Logins answered from the in-process cache.
postwire_ingest_smtp_messages_accepted_total    counter   Messages answered 250 (queued in INBOUND).
postwire_ingest_smtp_messages_rejected_total{reason}
                                                counter   Refused commands or messages; reason is one of
                                                          REJECT_REASONS below.
postwire_ingest_smtp_received_bytes_total       counter   Bytes of accepted messages, as submitted.
postwire_ingest_smtp_accept_seconds             histogram End of DATA to the 250 reply: body storage and
                                                          the JetStream PubAck.

Labels never carry addresses, usernames or account ids (unbounded cardinality).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REJECT_REASONS = (
    "auth_required",        # RCPT/DATA without AUTH from an untrusted network (no open relay)
    "bad_sender",           # MAIL FROM address syntax or length
    "bad_recipient",        # RCPT TO address syntax or length
    "too_many_recipients",  # over max_recipients
    "too_big",              # SIZE= or DATA over max_message_size
    "bad_parameter",        # a MAIL/RCPT parameter we do not know (555) or cannot read (501; DSN values)
    "line_too_long",        # a DATA line over RFC 5321's 1000 octets
    "queue_unavailable",    # NATS did not confirm: 451, the client retries
    "shutting_down",        # MAIL during graceful shutdown
    "error",                # unexpected exception: 451
    # hostile or broken clients (docs/reliability.md)
    "bare_line_ending",     # bare LF or CR in DATA (SMTP smuggling): 550, nothing queued
    "nul_in_data",          # a NUL character in DATA: 550
    "header_too_big",       # header block over smtp_max_header_size: 552
    "command_too_long",     # a command line over 512 octets (+ the DSN allowance of MAIL/RCPT)
    "unknown_command",      # 500 5.5.2
    "smtputf8",             # SMTPUTF8 or a non-ASCII address (not offered): 555 / 553
    "too_many_errors",      # smtp_max_errors replies 4xx/5xx in one session: 421 and disconnect
    "early_talker",         # input before the 220 greeting: 554 and disconnect
    "pipelining",           # message content before the 354 reply: 554 and disconnect
    "timeout",              # command or DATA timeout: 421 and disconnect
    "too_many_connections", # over smtp_max_connections_per_ip: 421 at the greeting
    "connection_rate",      # over smtp_connection_rate_per_ip: 421 at the greeting
    "auth_locked",          # AUTH while the IP or the username is locked out: 454
    "tls_failed",           # STARTTLS handshake failed (e.g. TLS older than 1.2): connection closed
    "unverified_from",      # From a domain the account has not verified: 550 5.7.1 (docs/domains.md)
    "policy_unavailable",   # the database could not say which From domains are verified: 451
)

CONNECTIONS = Counter("postwire_ingest_smtp_connections", "SMTP connections accepted.")
CONNECTIONS_ACTIVE = Gauge("postwire_ingest_smtp_connections_active", "SMTP connections open now.")
AUTH = Counter("postwire_ingest_smtp_auth", "AUTH attempts by mechanism and result "
               "(success|failure|tempfail|locked).", ["mechanism", "result"])
AUTH_CACHE_HITS = Counter("postwire_ingest_smtp_auth_cache_hits",
                          "Successful logins answered from the in-process cache (no argon2id).")
ACCEPTED = Counter("postwire_ingest_smtp_messages_accepted", "Messages answered 250: queued in INBOUND.")
REJECTED = Counter("postwire_ingest_smtp_messages_rejected", "Refused commands or messages by reason.",
                   ["reason"])
RECEIVED_BYTES = Counter("postwire_ingest_smtp_received_bytes", "Bytes of accepted messages, as submitted.")
ACCEPT_SECONDS = Histogram(
    "postwire_ingest_smtp_accept_seconds",
    "End of DATA to the 250 reply: storing the body and waiting for the JetStream PubAck.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def rejected(reason: str) -> None:
    """Count one refusal; ``reason`` must be one of REJECT_REASONS so the label set stays closed."""
    assert reason in REJECT_REASONS, reason
    REJECTED.labels(reason).inc()
