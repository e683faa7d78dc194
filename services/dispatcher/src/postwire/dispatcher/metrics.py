"""Prometheus metrics of the dispatcher (served on the ops port at /metrics).

Label values are bounded sets fixed in code; recipient domains, MX hosts and addresses never become
labels (they would make the series count grow with the customer base).

postwire_dispatcher_routed_messages_total{outcome}
    INBOUND messages handled by the router: routed | retry (nak'd for later) | poison (terminated).
postwire_dispatcher_transformer_calls_total{outcome}
    Transform RPCs: changed | unchanged | rejected (INVALID_ARGUMENT / RESOURCE_EXHAUSTED, original sent)
    | unavailable (UNAVAILABLE / DEADLINE_EXCEEDED / other, message retried later).
postwire_dispatcher_deliveries_total{outcome}
    Per-recipient outcomes: delivered | deferred | failed (router failures for unroutable addresses too)
    | suppressed (the router skipped a recipient on the account's suppression list).
postwire_dispatcher_provider_deliveries_total{provider, outcome}
    The sender's per-recipient outcomes by provider: delivered | deferred | failed (expiry counts as
    failed). provider is the shaping provider of the MX host that answered, or "none" when no server
    was reached (DNS failure, no address).
postwire_dispatcher_delivery_attempts_total{provider}
    Recipients offered to a server in a transaction (one per recipient per attempt).
postwire_dispatcher_throttled_total{provider}
    Server replies that matched the provider's throttle patterns (421, 4.7.x, [TS0x], ...).
postwire_dispatcher_budget_changes_total{provider, direction}
    Adaptive backoff steps: direction cut (a throttling reply) | recovery (one level back).
postwire_dispatcher_parked_total{provider}
    Messages put back on the retry subject for a few seconds because the provider's ready queue was
    full (no attempt made, no event): a sustained rate means the provider is the bottleneck.
postwire_dispatcher_provider_connections{provider}
    Outbound SMTP sessions open now for the provider (in use or idle).
postwire_dispatcher_allowed_message_rate{provider}
    Messages per second the provider's budget allows now (0 = unpaced). For "default", whose budgets
    are per MX host, the most backed-off budget is shown.
postwire_dispatcher_allowed_connections{provider}
    Concurrent sessions the provider's budget allows now (same rule for "default").
postwire_dispatcher_backoff_level{provider}
    Backoff cuts in force: 0 = the configured limits; each level multiplies rate and connections by
    the rule's backoff factor.
postwire_dispatcher_queue_messages{queue}
    Messages waiting in this replica's sender consumers, sampled from consumer info: queue fresh
    (outbound.<shard>, transactional) | retry (outbound.<shard>.retry, deferred transactional mail
    waiting for its schedule) | bulk (outbound.<shard>.bulk) | bulk_retry (outbound.<shard>.bulk.retry,
    deferred and parked bulk mail); undelivered plus delivered-but-unacked, summed over the owned shards.
postwire_dispatcher_lane_queue_seconds{lane}
    Time in queue per lane (transactional | bulk): from acceptance (the intake's 250/202) to the start
    of the message's first delivery attempt (a session of its provider ready for its transaction;
    parks are not attempts). One observation per recipient.
postwire_dispatcher_lane_messages_total{lane, outcome}
    The sender's per-recipient outcomes (delivered | deferred | failed) by lane.
postwire_dispatcher_lane_slots_total{stage, lane}
    Slots (messages asked of JetStream) given to each lane by the weighted choice: stage router |
    sender | retry.
postwire_dispatcher_accept_to_delivered_seconds{provider}
    Time from acceptance (the intake's 250/202) to the MX's 2xx for a recipient, retries included: the
    latency customers feel.
postwire_dispatcher_smtp_transaction_seconds
    MAIL FROM to the end of DATA (or to the last refused RCPT) on one connection.
postwire_dispatcher_smtp_connections
    Outbound SMTP connections open now, in use or idle in the pool.
postwire_dispatcher_smtp_connections_opened_total
    Connections opened; compared with deliveries it shows how well connections are reused.
postwire_dispatcher_inflight_messages{stage}
    Messages fetched and not yet acked or nak'd: stage router | sender (fresh mail) | retry.
postwire_dispatcher_dns_lookups_total{rtype, result}
    Resolver queries (cache hits included): rtype MX | A | AAAA; result ok | nodata | nxdomain | error.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROUTED = Counter("postwire_dispatcher_routed_messages_total",
                 "INBOUND messages handled by the router, by outcome (routed|retry|poison|held).",
                 ["outcome"])
TRANSFORMER_CALLS = Counter("postwire_dispatcher_transformer_calls_total",
                            "Transform RPCs by outcome (changed|unchanged|rejected|unavailable).",
                            ["outcome"])
DELIVERIES = Counter("postwire_dispatcher_deliveries_total",
                     "Per-recipient outcomes (delivered|deferred|failed|suppressed).", ["outcome"])
PROVIDER_DELIVERIES = Counter("postwire_dispatcher_provider_deliveries_total",
                              "Sender per-recipient outcomes (delivered|deferred|failed) by provider.",
                              ["provider", "outcome"])
ATTEMPTS = Counter("postwire_dispatcher_delivery_attempts_total",
                   "Recipients offered to a server in a transaction, by provider.", ["provider"])
SETTLED_AGAIN = Counter("postwire_dispatcher_settled_redeliveries_total",
                        "OUTBOUND messages handed out again after this process had settled them (an ack NATS "
                        "lost, e.g. in a leader change): acked again, not sent a second time")
PARKED = Counter("postwire_dispatcher_parked_total",
                 "Messages parked because the provider's ready queue was full.", ["provider"])
THROTTLED = Counter("postwire_dispatcher_throttled_total",
                    "Server replies matching the provider's throttle patterns.", ["provider"])
BUDGET_CHANGES = Counter("postwire_dispatcher_budget_changes_total",
                         "Adaptive backoff steps by provider and direction (cut|recovery).",
                         ["provider", "direction"])
PROVIDER_CONNECTIONS = Gauge("postwire_dispatcher_provider_connections",
                             "Outbound SMTP sessions open now, by provider.", ["provider"])
ALLOWED_RATE = Gauge("postwire_dispatcher_allowed_message_rate",
                     "Messages per second the provider's budget allows now (0 = unpaced).", ["provider"])
ALLOWED_CONNECTIONS = Gauge("postwire_dispatcher_allowed_connections",
                            "Concurrent sessions the provider's budget allows now.", ["provider"])
BACKOFF_LEVEL = Gauge("postwire_dispatcher_backoff_level",
                      "Adaptive backoff cuts in force for the provider (0 = configured limits).",
                      ["provider"])
QUEUE_MESSAGES = Gauge("postwire_dispatcher_queue_messages",
                       "Messages waiting in the owned sender consumers (fresh|retry|bulk|bulk_retry), "
                       "sampled.",
                       ["queue"])
ACCEPT_TO_DELIVERED = Histogram(
    "postwire_dispatcher_accept_to_delivered_seconds",
    "From acceptance (SMTP 250 / API 202) to the recipient's MX accepting it, by provider.", ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600))
SMTP_TRANSACTION = Histogram("postwire_dispatcher_smtp_transaction_seconds",
                             "MAIL FROM to end of DATA of one SMTP transaction.",
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
OPEN_CONNECTIONS = Gauge("postwire_dispatcher_smtp_connections",
                         "Outbound SMTP connections open now (in use or idle in the pool).")
CONNECTIONS_OPENED = Counter("postwire_dispatcher_smtp_connections_opened_total",
                             "Outbound SMTP connections opened (successful greeting).")
LANE_QUEUE = Histogram(
    "postwire_dispatcher_lane_queue_seconds",
    "From acceptance to the start of the first delivery attempt, by lane (transactional|bulk).", ["lane"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600))
LANE_MESSAGES = Counter("postwire_dispatcher_lane_messages_total",
                        "Sender per-recipient outcomes (delivered|deferred|failed) by lane.",
                        ["lane", "outcome"])
LANE_SLOTS = Counter("postwire_dispatcher_lane_slots_total",
                     "Slots given to each lane by the weighted choice, by stage (router|sender|retry).",
                     ["stage", "lane"])
INFLIGHT = Gauge("postwire_dispatcher_inflight_messages",
                 "Messages fetched and not yet acked or nak'd, by stage (router|sender|retry).", ["stage"])
DNS_LOOKUPS = Counter("postwire_dispatcher_dns_lookups_total",
                      "DNS queries by record type (MX|A|AAAA) and result (ok|nodata|nxdomain|error).",
                      ["rtype", "result"])
