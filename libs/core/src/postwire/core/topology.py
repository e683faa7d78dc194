"""The JetStream topology, declared in one place and applied idempotently at service start.

Streams
  INBOUND   inbound.<account>   accepted messages, one per submission (work queue: the router);
            inbound.<account>.bulk  the same for the bulk lane (own consumer; postwire.core.lanes)
  OUTBOUND  outbound.<shard>    one per message and recipient domain (work queue: the senders)
            outbound.<shard>.retry  deferred recipients waiting for their schedule (own consumer)
            outbound.<shard>.bulk[.retry]  the same two for the bulk lane (own consumers)
  EVENTS    events.<account>.<type>   every outcome (limits: read by the recorder and the webhook notifier)
  WEBHOOKS  webhooks.<webhook id>[.retry]  one signed POST to make per endpoint and event (work queue:
            one consumer pair per endpoint, so a failing endpoint only holds up itself; docs/webhooks.md)
  ARCHIVE   archive.<message id>  every routed InboundMessage, kept for the retention period so
            POST /v1/resend can send it again (limits: one per id, aged out)
Object store
  BODIES    message bodies larger than the inline threshold (kept as long as the archive)
Key-value buckets
  SUPPRESSIONS  mirror of the suppression list for the router's per-recipient check (postwire.db.suppressions)
  TRACKING      per tracked message: links, recipients, ids (postwire.core.tracking), plus first-open /
                first-click markers; entries age out with the tracking retention
  LIMITS        rate limits, quotas and per-IP counters shared by the replicas of a service, and each
                service's live replicas (postwire.core.sharedlimits, docs/limits.md); entries age out
                after two days untouched (a bucket untouched that long is full again)
  LEADERS       one key per job that one replica does for the whole system (postwire.core.leader):
                who holds it, until when
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

from postwire.core.lanes import BULK, TRANSACTIONAL, lane_of
from postwire.core.settings import PostwireSettings

INBOUND = "INBOUND"
OUTBOUND = "OUTBOUND"
EVENTS = "EVENTS"
BODIES = "BODIES"
WEBHOOKS = "WEBHOOKS"
SUPPRESSIONS = "SUPPRESSIONS"
ARCHIVE = "ARCHIVE"
TRACKING = "TRACKING"
LIMITS = "LIMITS"
LEADERS = "LEADERS"

DAY = 24 * 3600.0
# longer than any window of a shared limit (the daily send quota; AUTH windows and lockouts are at most a
# day), so an entry only ages out once it would read as full anyway
LIMITS_MAX_AGE_S = 2 * DAY


# the router's consumers: transactional mail keeps the subjects it had before lanes existed (so what
# was queued then is still consumed), bulk adds a token; the filters do not overlap (a work queue)
INBOUND_FILTERS = {TRANSACTIONAL: "inbound.*", BULK: "inbound.*.bulk"}


def inbound_subject(account_id: str, stream: str = TRANSACTIONAL) -> str:
    return f"inbound.{account_id}.bulk" if lane_of(stream) == BULK else f"inbound.{account_id}"


# bulk mail of an account whose bulk lane is paused (complaints) waits here, read by its own router
# consumer; no other filter covers it (docs/delivery.md, "Pausing bulk mail on complaints")
INBOUND_HELD_FILTER = "inbound.*.held"


def inbound_held_subject(account_id: str) -> str:
    return f"inbound.{account_id}.held"


def outbound_subject(shard: int, stream: str = TRANSACTIONAL) -> str:
    return f"outbound.{shard:03d}.bulk" if lane_of(stream) == BULK else f"outbound.{shard:03d}"


def outbound_retry_subject(shard: int, stream: str = TRANSACTIONAL) -> str:
    """Deferred mail of a shard: a separate subject (and consumer) so a retry backlog never holds up
    fresh mail, one per lane. ``outbound.>`` covers them; no two of a shard's four subjects overlap."""
    return f"{outbound_subject(shard, stream)}.retry"


def archive_subject(message_id: str) -> str:
    return f"archive.{message_id}"


def event_subject(account_id: str, event_type: str) -> str:
    return f"events.{account_id}.{event_type}"


def webhook_subject(webhook_id: str) -> str:
    """Fresh deliveries of one endpoint; ``webhook_retry_subject`` holds its failed ones (own consumer)."""
    return f"webhooks.{webhook_id}"


def webhook_retry_subject(webhook_id: str) -> str:
    return f"webhooks.{webhook_id}.retry"


@dataclass(frozen=True)
class Topology:
    replicas: int = 1
    duplicate_window_s: float = 120.0
    # longer than the longest retry lifetime, so a deferred message is never dropped by age
    queue_max_age_s: float = 7 * DAY
    events_max_age_s: float = 7 * DAY
    archive_max_age_s: float = 7 * DAY
    tracking_max_age_s: float = 90 * DAY

    @classmethod
    def from_settings(cls, settings: PostwireSettings) -> Topology:
        return cls(replicas=settings.stream_replicas, archive_max_age_s=settings.message_retention_days * DAY,
                   tracking_max_age_s=settings.tracking_retention_days * DAY)

    def streams(self) -> list[StreamConfig]:
        def stream(name: str, subject: str, retention: RetentionPolicy, max_age: float) -> StreamConfig:
            return StreamConfig(name=name, subjects=[subject], retention=retention, max_age=max_age,
                                storage=StorageType.FILE, num_replicas=self.replicas,
                                duplicate_window=self.duplicate_window_s)

        return [
            stream(INBOUND, "inbound.>", RetentionPolicy.WORK_QUEUE, self.queue_max_age_s),
            stream(OUTBOUND, "outbound.>", RetentionPolicy.WORK_QUEUE, self.queue_max_age_s),
            stream(EVENTS, "events.>", RetentionPolicy.LIMITS, self.events_max_age_s),
            # outlives the webhook retry window (24 h by default), so a retry is parked, never aged out
            stream(WEBHOOKS, "webhooks.>", RetentionPolicy.WORK_QUEUE, self.queue_max_age_s),
            # one entry per id (a redelivered message's copy replaces the first)
            StreamConfig(name=ARCHIVE, subjects=["archive.>"], retention=RetentionPolicy.LIMITS,
                         max_age=self.archive_max_age_s, max_msgs_per_subject=1, storage=StorageType.FILE,
                         num_replicas=self.replicas, duplicate_window=self.duplicate_window_s,
                         allow_direct=True),
        ]

    async def apply(self, js: JetStreamContext) -> None:
        """Create or update every stream and bucket; safe to call from every replica at every start."""
        for cfg in self.streams():
            try:
                await js.add_stream(cfg)
            except BadRequestError:
                await js.update_stream(cfg)
        with contextlib.suppress(BadRequestError):
            await js.create_object_store(
                BODIES,
                config=ObjectStoreConfig(bucket=BODIES, storage=StorageType.FILE, replicas=self.replicas,
                                         ttl=max(self.queue_max_age_s, self.archive_max_age_s)),
            )
        with contextlib.suppress(BadRequestError):  # no bucket TTL: entries live until removed
            await js.create_key_value(config=KeyValueConfig(bucket=SUPPRESSIONS, history=1, direct=True,
                                                            storage=StorageType.FILE, replicas=self.replicas))
        with contextlib.suppress(BadRequestError):
            await js.create_key_value(config=KeyValueConfig(bucket=TRACKING, history=1, direct=True,
                                                            ttl=self.tracking_max_age_s,
                                                            storage=StorageType.FILE, replicas=self.replicas))
        with contextlib.suppress(BadRequestError):
            await js.create_key_value(config=KeyValueConfig(bucket=LIMITS, history=1, direct=True,
                                                            ttl=LIMITS_MAX_AGE_S,
                                                            storage=StorageType.FILE, replicas=self.replicas))
        with contextlib.suppress(BadRequestError):
            await js.create_key_value(config=KeyValueConfig(bucket=LEADERS, history=1, direct=True,
                                                            storage=StorageType.FILE, replicas=self.replicas))


def work_consumer(durable: str, *, filter_subject: str | None = None, ack_wait_s: float = 120.0,
                  max_ack_pending: int = 1024) -> ConsumerConfig:
    """A durable pull consumer that must ack after its own durable effect."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=filter_subject,
        ack_wait=ack_wait_s,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )


async def ensure_consumer(js: JetStreamContext, stream: str, cfg: ConsumerConfig) -> None:
    """Create the durable consumer, or update it (JetStream's create is idempotent for equal configs
    and updates the editable fields of an existing one)."""
    await js.add_consumer(stream, cfg)
