"""The sender: one OUTBOUND message (a message's recipients at one domain) → SMTP → events → settle.

Two consumers per shard and lane run this handler: the fresh one (``outbound.<shard>``, what the router
publishes) and the retry one (``outbound.<shard>.retry``, deferred mail), and the same two for bulk mail
(``outbound.<shard>.bulk[.retry]``). A message keeps its lane (``OutboundMessage.stream``) through every
retry and park; in the provider's budget a transactional message does not queue behind bulk ones
(postwire.dispatcher.smtp_pool). A message carrying ``not_before`` in the
future is nak'd with exactly the remaining delay before anything else happens, so it is never attempted
early, whatever JetStream's redelivery timing, restarts or a replica change do: the schedule travels in
the message.

Attempt numbers. ``OutboundMessage.attempt`` counts the attempts made before the message was published;
JetStream's delivery count adds the redeliveries since, so the attempt of this delivery is
``attempt + num_delivered - 1``. Every delivery consumes a number, including one that only finds its
``not_before`` still in the future, so numbers may skip but never repeat: event ids
("<message>.<type>.<attempt>.<rcpt>") stay unique per attempt and stable if the same delivery is redone.

Settling, after the events are published:
- every recipient final (delivered/failed)          → ack;
- some or all recipients deferred                   → publish a new OutboundMessage with just the
  deferred ones to the shard's retry subject (attempt + 1, not_before = now + backoff, Nats-Msg-Id
  "<id>.<attempt + 1>.<hash of the recipients>": retry_msg_id), then ack the original. Acking —
  rather than nak(delay) as before — is what keeps a deferred backlog off the fresh consumer's
  max_ack_pending, so it cannot stall new mail, and delivered recipients are never sent again;
- deferred past the message lifetime                → "failed" with response "expired" (4.4.7).
The events and the retry message go out as one batch (one write) and are published again until NATS
confirms all of them (the message is kept in progress meanwhile; their dedup ids make a repeat
harmless): after an SMTP transaction has happened, a nak would send the mail twice.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

import google.protobuf.message
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import Header
from nats.js.errors import ObjectNotFoundError

from postwire.core import settle
from postwire.core.bodies import BodyStore
from postwire.core.events import event_message, make_event
from postwire.core.jetstream import PipelinedJetStream
from postwire.core.lanes import lane_of
from postwire.core.sharding import shard_for
from postwire.core.topology import outbound_retry_subject
from postwire.core.verp import PREFIX as VERP_PREFIX
from postwire.dispatcher import metrics
from postwire.dispatcher.delivery import Deliverer
from postwire.dispatcher.dkim import KeysUnavailable
from postwire.dispatcher.outcomes import Reply, local
from postwire.dispatcher.personalise import Personaliser
from postwire.dispatcher.rendering import RENDER_FAILED, Renderer, RenderFailed
from postwire.dispatcher.retry import RetryPolicy
from postwire.dispatcher.smtp_client import DsnParams
from postwire.dispatcher.throttle import Budget, BudgetFull, Shaper
from postwire.dispatcher.worker import ByteBudget, Heartbeats
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

EXPIRED = "expired"
# a body we could not read because NATS failed us: not a delivery attempt, come back soon
BODY_RETRY_S = 2.0
_PUBLISH_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_ACK_RETRY_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
# how many settled OUTBOUND messages each sender remembers (their stream and sequence: ~200 bytes each)
SETTLED_MEMORY = 50_000  # about 10 MB; an ack lost in a failover comes back after ack_wait


# what a recipient whose maxdelivertime passed before an attempt "deferred" with (then failed as expired)
_TOO_LATE = local("4.4.7", "the message's delivery deadline (maxdelivertime) passed before delivery")


def _deadline(out: envelope_pb2.OutboundMessage) -> datetime | None:
    return out.expires_at.ToDatetime(UTC) if out.HasField("expires_at") else None


def dsn_params(out: envelope_pb2.OutboundMessage) -> DsnParams | None:
    """The RFC 3461 parameters to pass on to the next hop: only when the envelope sender is the customer's
    own (trackbounces=false). With a VERP return path the reports come to us, and we honour NOTIFY, RET
    and ENVID ourselves when forwarding bounces (docs/bounces.md); passing NOTIFY=NEVER on would stop the
    very bounces we track."""
    if out.mail_from.lower().startswith(f"{VERP_PREFIX}-"):
        return None
    if not out.HasField("dsn") and not out.HasField("recipient_dsn"):
        return None
    return DsnParams(ret=out.dsn.ret, envid=out.dsn.envid, notify=tuple(out.recipient_dsn.notify),
                     orcpt=out.recipient_dsn.orcpt)


async def _confirm_ack(js: PipelinedJetStream, msg: Msg) -> None:
    """Ack and wait for the server to confirm, trying again while NATS restarts. Bounded: the server
    does not answer an ack it already processed (the reply got lost), so endless retries could hang."""
    for tries, pause in enumerate(_ACK_RETRY_S, start=1):
        if pause:
            await asyncio.sleep(pause)
        try:
            await js.ack_confirmed(msg, timeout=5.0)
            return
        except (nats.errors.Error, TimeoutError, OSError) as e:
            retry_in = _ACK_RETRY_S[tries] if tries < len(_ACK_RETRY_S) else None  # None: giving up
            log.warning("sender.ack_unconfirmed", error=str(e) or type(e).__name__, retry_in=retry_in)


def _position(msg: Msg) -> tuple[str, int]:
    """Where a JetStream message sits: its stream and sequence, the same on every redelivery."""
    metadata = msg.metadata
    return metadata.stream, metadata.sequence.stream


def retry_msg_id(message_id: str, recipients: Iterable[str], attempt: int) -> str:
    """Stable per (message, recipients, attempt): a republish after a lost PubAck is deduplicated, while
    two recipients of one message deferred on the same attempt stay two messages."""
    who = hashlib.sha256("\n".join(sorted(r.lower() for r in recipients)).encode()).hexdigest()[:20]
    return f"{message_id}.{attempt}.{who}"


class Sender:
    def __init__(self, js: PipelinedJetStream, bodies: BodyStore, deliverer: Deliverer, policy: RetryPolicy,
                 shaper: Shaper, *, shards: int, heartbeat_s: float,
                 personaliser: Personaliser | None = None, renderer: Renderer | None = None,
                 body_memory_max: int = 64 * 2**20) -> None:
        self._js = js
        self._shaper = shaper
        self._bodies = bodies
        self._deliverer = deliverer
        self._policy = policy
        self._shards = shards
        self.heartbeats = Heartbeats(heartbeat_s)  # run() by the service beside the consumers
        self._body_memory = ByteBudget(body_memory_max)
        self._personaliser = personaliser
        self._renderer = renderer
        self._settled: OrderedDict[tuple[str, int], None] = OrderedDict()

    async def handle(self, msg: Msg) -> None:
        try:
            out = envelope_pb2.OutboundMessage.FromString(msg.data)
        except google.protobuf.message.DecodeError:
            log.error("sender.poison_message", subject=msg.subject)
            await settle.term(msg)
            return
        metadata = msg.metadata
        if metadata.num_delivered > 1 and self._was_settled(msg):
            # this process sent it and acked it, and NATS lost the ack (a consumer leader that died before
            # the ack reached its followers): its recipients already had it, so ack, never send twice
            metrics.SETTLED_AGAIN.inc()
            log.warning("sender.settled_redelivery", message_id=out.message_id, subject=msg.subject,
                        deliveries=metadata.num_delivered)
            await _confirm_ack(self._js, msg)
            return
        attempt = out.attempt + metadata.num_delivered - 1
        wait = self._not_yet(out)
        if wait > 0:
            await settle.nak(msg, delay=wait)  # not sent: back after ack_wait, and not due before `wait`
            return
        deadline = _deadline(out)
        if deadline is not None and datetime.now(UTC) >= deadline:  # maxdelivertime passed
            await self._settle(msg, out, attempt, dict.fromkeys(out.recipients, _TOO_LATE), expired=True)
            return
        with self.heartbeats.keep_alive(msg):
            try:
                replies = await self._attempt(out, lane_of(out.stream))
            except BudgetFull as full:
                await self._park(msg, out, attempt, full.budget)
                return
            if replies is None:
                await settle.nak(msg, delay=BODY_RETRY_S)
                return
            await self._settle(msg, out, attempt, replies)

    async def _park(self, msg: Msg, out: envelope_pb2.OutboundMessage, attempt: int,
                    budget: Budget) -> None:
        """The provider has a full ready queue: come back later from the retry subject instead of
        holding a slot that mail to other providers needs. Not an attempt, so no event; the attempt
        number still moves on, so the parked copy's Nats-Msg-Id is new each time it is parked."""
        delay = budget.park_delay(waited=out.HasField("not_before"), lane=lane_of(out.stream))
        metrics.PARKED.labels(budget.provider).inc()
        log.debug("sender.parked", message_id=out.message_id, provider=budget.provider, retry_in=delay)
        parked = self._retry_message(out, list(out.recipients), attempt + 1,
                                     datetime.now(UTC) + timedelta(seconds=delay))
        await self._durably(functools.partial(self._js.publish_many, [self._retry(parked)]))
        # confirmed, as after an attempt: a lost ack would have the message parked a second time (its
        # redelivery has the next attempt number, so the copy a new id) and delivered twice
        self._remember_settled(msg)
        await _confirm_ack(self._js, msg)

    @staticmethod
    def _not_yet(out: envelope_pb2.OutboundMessage) -> float:
        """Seconds until a scheduled retry is due (0 when it is due or not a scheduled retry)."""
        if not out.HasField("not_before"):
            return 0.0
        return max(0.0, (out.not_before.ToDatetime(UTC) - datetime.now(UTC)).total_seconds())

    async def _attempt(self, out: envelope_pb2.OutboundMessage, lane: str) -> dict[str, Reply] | None:
        """Replies for every recipient, or None when the body could not be read just now. A body kept in
        the object store is read only when the memory budget has room for it."""
        stored = out.body.size if out.body.WhichOneof("location") == "object_name" else 0
        async with self._body_memory.hold(stored):
            return await self._read_and_deliver(out, lane)

    @staticmethod
    def _queue_timer(out: envelope_pb2.OutboundMessage, lane: str) -> Callable[[], None] | None:
        """What observes the message's time in queue when its first attempt starts (None: not its first)."""
        if out.attempted or not out.HasField("accepted_at"):
            return None
        observed = False

        def started() -> None:
            nonlocal observed
            if not observed:
                observed = True
                waited = (datetime.now(UTC) - out.accepted_at.ToDatetime(UTC)).total_seconds()
                for _ in out.recipients:  # one per recipient, as the outcome counters
                    metrics.LANE_QUEUE.labels(lane).observe(max(0.0, waited))
        return started

    async def _read_and_deliver(self, out: envelope_pb2.OutboundMessage,
                                lane: str) -> dict[str, Reply] | None:
        try:
            if out.HasField("personalised"):
                try:
                    data = await self._rendered(out)
                except RenderFailed as e:  # the same data fails the same way: final, never retried
                    log.info("sender.render_failed", message_id=out.message_id, error=str(e))
                    return dict.fromkeys(out.recipients, local(RENDER_FAILED, f"template: {e}"))
                if self._personaliser is not None:
                    data = await self._personaliser.sign(out, data)
            else:
                data = await self._bodies.get(out.body)
                if self._personaliser is not None and (out.tracking.nonce or out.headers.unsubscribe_base):
                    data = await self._personaliser.prepare(out, data)
                elif self._personaliser is not None and out.headers.feedback_id:  # unsigned: nothing to sign
                    data = self._personaliser.headed(out, data)
        except ObjectNotFoundError:
            return dict.fromkeys(out.recipients, local("5.3.0", "message body not found in the object store"))
        except (nats.errors.Error, TimeoutError, OSError, KeysUnavailable) as e:
            log.warning("sender.body_unavailable", message_id=out.message_id,
                        error=str(e) or type(e).__name__)
            return None
        return await self._deliverer.deliver(out.domain, out.mail_from, list(out.recipients), data,
                                             dsn=dsn_params(out), lane=lane,
                                             started=self._queue_timer(out, lane))

    async def _rendered(self, out: envelope_pb2.OutboundMessage) -> bytes:
        """The recipient's MIME; the body is read only when this process has not compiled it yet. In a
        thread: a runaway template takes up to its step limit (about a second) to fail."""
        if self._renderer is None:
            raise RenderFailed("this sender cannot render personalised messages")
        compiled = self._renderer.lookup(out.body)
        return await asyncio.to_thread(self._renderer.render, out,
                                       compiled if compiled is not None else await self._bodies.get(out.body))

    async def _settle(self, msg: Msg, out: envelope_pb2.OutboundMessage, attempt: int,
                      replies: dict[str, Reply], expired: bool = False) -> None:
        now = datetime.now(UTC)
        deferred = [r for r in out.recipients if replies[r].outcome == "deferred"]
        delay = None
        if deferred and not expired:
            delay = self._policy.next_delay(out.accepted_at.ToDatetime(UTC), now, deadline=_deadline(out))
        expired = bool(deferred) and delay is None
        outcomes = [self._outcome(out, attempt, rcpt, replies[rcpt], expired) for rcpt in out.recipients]
        batch = [event_message(ev) for ev in outcomes]
        if deferred and not expired:
            assert delay is not None
            retry = self._retry_message(out, deferred, attempt + 1, now + timedelta(seconds=delay))
            retry.attempted = True
            batch.append(self._retry(retry))
        # the events and the retry copy in one write, confirmed together, retried as one (dedup ids)
        await self._durably(functools.partial(self._js.publish_many, batch))
        for ev, rcpt in zip(outcomes, out.recipients, strict=True):
            self._count(out, ev.type, replies[rcpt])
        # every outcome is an event (events API, webhooks); the log shows the attempts that did not deliver
        delivered = all(reply.outcome == "delivered" for reply in replies.values())
        (log.debug if delivered else log.info)(
            "sender.attempt", message_id=out.message_id, attempt=attempt, subject=msg.subject,
            recipients=len(out.recipients), deferred=len(deferred), expired=expired, retry_in=delay,
            mx_host=next(iter(replies.values())).mx_host if replies else "")
        # confirmed, and retried across a NATS restart: a lost ack of a delivered message would have it
        # redelivered after ack_wait and sent to the recipient a second time
        self._remember_settled(msg)
        await _confirm_ack(self._js, msg)

    def _remember_settled(self, msg: Msg) -> None:
        """Keep the message's stream position (the most recent SETTLED_MEMORY): an ack the server lost
        comes back as the same position with a higher delivery count, and :meth:`handle` knows it."""
        self._settled[_position(msg)] = None
        if len(self._settled) > SETTLED_MEMORY:
            self._settled.popitem(last=False)

    def _was_settled(self, msg: Msg) -> bool:
        return _position(msg) in self._settled

    @staticmethod
    def _outcome(out: envelope_pb2.OutboundMessage, attempt: int, rcpt: str, reply: Reply,
                 expired: bool) -> envelope_pb2.Event:
        outcome = reply.outcome
        fields = reply.event_fields()  # code, status, text, and the classifier's reason and hard/soft
        if outcome == "deferred" and expired:
            log.info("sender.expired", message_id=out.message_id, recipient=rcpt, last_reply=reply.text)
            outcome, fields = "failed", {"smtp_code": 0, "enhanced_status": "4.4.7", "response": EXPIRED,
                                         "reason": EXPIRED, "hardbounce": False}
        return make_event(outcome, account_id=out.account_id, message_id=out.message_id, recipient=rcpt,
                          attempt=attempt, mx_host=reply.mx_host, tags=list(out.tags),
                          metadata=dict(out.metadata), template_id=out.personalised.template_id, **fields)

    def _count(self, out: envelope_pb2.OutboundMessage, outcome: str, reply: Reply) -> None:
        metrics.DELIVERIES.labels(outcome).inc()
        metrics.LANE_MESSAGES.labels(lane_of(out.stream), outcome).inc()
        provider = self._shaper.provider_for(reply.mx_host) if reply.mx_host else "none"
        metrics.PROVIDER_DELIVERIES.labels(provider, outcome).inc()
        if outcome == "delivered" and out.HasField("accepted_at"):
            latency = (datetime.now(UTC) - out.accepted_at.ToDatetime(UTC)).total_seconds()
            metrics.ACCEPT_TO_DELIVERED.labels(provider).observe(max(0.0, latency))

    @staticmethod
    def _retry_message(out: envelope_pb2.OutboundMessage, recipients: list[str], attempt: int,
                       not_before: datetime) -> envelope_pb2.OutboundMessage:
        retry = envelope_pb2.OutboundMessage()
        retry.CopyFrom(out)
        del retry.recipients[:]
        retry.recipients.extend(recipients)
        retry.attempt = attempt
        retry.not_before.FromDatetime(not_before)
        return retry

    def _retry(self, retry: envelope_pb2.OutboundMessage) -> tuple[str, bytes, dict[str, str]]:
        return (outbound_retry_subject(shard_for(retry.domain, self._shards), retry.stream),
                retry.SerializeToString(),
                {Header.MSG_ID: retry_msg_id(retry.message_id, retry.recipients, retry.attempt)})

    @staticmethod
    async def _durably(publish: Callable[[], Awaitable[object]]) -> None:
        """Retry a publish until NATS confirms it; only shutdown (cancellation) ends the loop early."""
        for tries in itertools.count():
            try:
                await publish()
                return
            except (nats.errors.Error, TimeoutError, OSError) as e:
                pause = _PUBLISH_BACKOFF_S[min(tries, len(_PUBLISH_BACKOFF_S) - 1)]
                log.warning("sender.publish_failed", error=str(e) or type(e).__name__, retry_in=pause)
                await asyncio.sleep(pause)
