"""Prometheus metrics of the dispatcher (served on the ops port at /metrics).

Label values are bounded sets fixed in code; recipient domains, MX hosts and addresses never become
labels (they would make the series count grow with the customer base).

postwire_dispatcher_routed_messages_total{outcome}
    INBOUND messages handled by the router: routed | retry (nak'd for later) | poison (terminated).
postwire_dispatcher_transformer_calls_total{outcome}
    Transform RPCs: changed | unchanged | rejected (INVALID_ARGUMENT / RESOURCE_EXHAUSTED, original sent)
    | unavailable (UNAVAILABLE / DEADLINE_EXCEEDED / other, message retried later).
postwire_dispatcher_deliveries_total{outcome}
    Per-recipient outcomes: delivered | deferred | failed.
postwire_dispatcher_smtp_transaction_seconds
    MAIL FROM to the end of DATA (or to the last refused RCPT) on one connection.
postwire_dispatcher_smtp_connections
    Outbound SMTP connections open now, in use or idle in the pool.
postwire_dispatcher_smtp_connections_opened_total
    Connections opened; compared with deliveries it shows how well connections are reused.
postwire_dispatcher_inflight_messages{stage}
    Messages fetched and not yet acked or nak'd: stage router | sender.
postwire_dispatcher_dns_lookups_total{rtype, result}
    Resolver queries (cache hits included): rtype MX | A | AAAA; result ok | nodata | nxdomain | error.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROUTED = Counter("postwire_dispatcher_routed_messages_total",
                 "INBOUND messages handled by the router, by outcome (routed|retry|poison).", ["outcome"])
TRANSFORMER_CALLS = Counter("postwire_dispatcher_transformer_calls_total",
                            "Transform RPCs by outcome (changed|unchanged|rejected|unavailable).",
                            ["outcome"])
DELIVERIES = Counter("postwire_dispatcher_deliveries_total",
                     "Per-recipient delivery outcomes (delivered|deferred|failed).", ["outcome"])
SMTP_TRANSACTION = Histogram("postwire_dispatcher_smtp_transaction_seconds",
                             "MAIL FROM to end of DATA of one SMTP transaction.",
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
OPEN_CONNECTIONS = Gauge("postwire_dispatcher_smtp_connections",
                         "Outbound SMTP connections open now (in use or idle in the pool).")
CONNECTIONS_OPENED = Counter("postwire_dispatcher_smtp_connections_opened_total",
                             "Outbound SMTP connections opened (successful greeting).")
INFLIGHT = Gauge("postwire_dispatcher_inflight_messages",
                 "Messages fetched and not yet acked or nak'd, by stage (router|sender).", ["stage"])
DNS_LOOKUPS = Counter("postwire_dispatcher_dns_lookups_total",
                      "DNS queries by record type (MX|A|AAAA) and result (ok|nodata|nxdomain|error).",
                      ["rtype", "result"])
