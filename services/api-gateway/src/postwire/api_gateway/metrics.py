"""Prometheus metrics of the api-gateway (served at /metrics on the API port).

postwire_api_requests_total{route,method,status}
    Every HTTP request, by route template (``/v1/messages/{message_id}``, never the concrete path, so
    cardinality stays bounded; unknown paths are ``unmatched``) and response status.
postwire_api_request_duration_seconds{route,method}
    Time from request start to the response's first byte.
postwire_api_messages_accepted_total{endpoint}
    Messages durably queued, by endpoint (``json`` | ``mime`` for /v1/messages, ``send`` | ``resend`` for
    the SMTPeter-compatible routes); idempotent replays not counted.
postwire_api_accept_seconds{endpoint}
    Time spent making one message durable: body store + INBOUND publish until the JetStream PubAck.
postwire_api_messages_rejected_total{reason}
    Submissions refused: ``invalid`` (422), ``too_large`` (413), ``queue_unavailable`` (503),
    ``unauthorized`` (401), ``idempotency_conflict`` (409/422 on key reuse), ``rate_limited`` and
    ``quota_exceeded`` (429, ratelimit.py; any /v1 request for the former).
postwire_api_idempotent_replays_total
    Requests answered from a stored Idempotency-Key answer instead of sending again.
postwire_api_dmarc_reports_total{outcome}
    DMARC aggregate reports posted to /v1/dmarc/reports: ``stored``, ``duplicate`` (the same report was
    stored before: answered with it), ``unknown_domain`` (not a sending domain of the account), or the
    refusal's code (``failure_report``, ``zip_bomb``, …: postwire.dmarc.errors.CODES).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("postwire_api_requests_total", "HTTP requests by route template, method and status.",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("postwire_api_request_duration_seconds",
                            "HTTP request handling time until the response starts.", ["route", "method"])
ACCEPTED = Counter("postwire_api_messages_accepted_total", "Messages durably queued to INBOUND.",
                   ["endpoint"])
ACCEPT_SECONDS = Histogram("postwire_api_accept_seconds",
                           "Body store plus INBOUND publish until the JetStream PubAck.", ["endpoint"],
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
REJECTED = Counter("postwire_api_messages_rejected_total", "Submissions refused, by reason.", ["reason"])
REPLAYS = Counter("postwire_api_idempotent_replays_total",
                  "Requests answered from a stored Idempotency-Key answer.")
DMARC_REPORTS = Counter("postwire_api_dmarc_reports_total",
                        "DMARC aggregate reports posted, by outcome: stored, duplicate (stored before), "
                        "unknown_domain, or the parser's refusal code (postwire.dmarc.errors.CODES).",
                        ["outcome"])
