"""The router: INBOUND → (transformer) → one OutboundMessage per recipient domain on its shard.

Order of effects, each idempotent so a redelivery repeats them harmlessly (P3: ack last):
1. "accepted" event per recipient (the recorder creates the message row from it; stable event ids);
2. "failed" events for recipients whose address cannot be routed at all;
3. OutboundMessage per domain to outbound.<shard> with Nats-Msg-Id "<message_id>.<domain>";
4. ack. Any publish failure → nak with a delay; nothing is acked before its effects are durable.
"""

from __future__ import annotations

import re

import google.protobuf.message
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import ObjectNotFoundError

from postwire.core.bodies import BodyStore
from postwire.core.events import make_event, publish_event
from postwire.core.sharding import shard_for
from postwire.core.topology import outbound_subject
from postwire.dispatcher import metrics
from postwire.dispatcher.domains import group_by_domain
from postwire.dispatcher.replies import Reply, local
from postwire.dispatcher.transform import TransformerClient, TransformerUnavailable
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

# how long a message waits after NATS itself failed us mid-route
PUBLISH_RETRY_S = 2.0


# a superset test: any MIME part of type text/html must contain this string in its headers
_HTML = re.compile(rb"text/html", re.IGNORECASE)


def outbound_msg_id(message_id: str, domain: str) -> str:
    return f"{message_id}.{domain}"


class Router:
    def __init__(self, js: JetStreamContext, bodies: BodyStore, transformer: TransformerClient, *,
                 shards: int, transformer_retry_s: float) -> None:
        self._js = js
        self._bodies = bodies
        self._transformer = transformer
        self._shards = shards
        self._transformer_retry_s = transformer_retry_s

    async def handle(self, msg: Msg) -> None:
        try:
            inbound = envelope_pb2.InboundMessage.FromString(msg.data)
        except google.protobuf.message.DecodeError:
            log.error("router.poison_message", subject=msg.subject)
            metrics.ROUTED.labels("poison").inc()
            await msg.term()
            return
        bound = log.bind(message_id=inbound.message_id, account_id=inbound.account_id)
        try:
            await self.route(inbound)
        except TransformerUnavailable as e:
            bound.warning("router.transformer_unavailable", error=str(e), retry_in=self._transformer_retry_s)
            metrics.ROUTED.labels("retry").inc()
            await msg.nak(delay=self._transformer_retry_s)
            return
        except (nats.errors.Error, TimeoutError, OSError) as e:
            bound.warning("router.publish_failed", error=str(e) or type(e).__name__, retry_in=PUBLISH_RETRY_S)
            metrics.ROUTED.labels("retry").inc()
            await msg.nak(delay=PUBLISH_RETRY_S)
            return
        metrics.ROUTED.labels("routed").inc()
        await msg.ack()

    async def route(self, inbound: envelope_pb2.InboundMessage) -> None:
        """Publish every effect of ``inbound``; raises on anything that should be retried."""
        groups, bad = group_by_domain(list(inbound.recipients))
        await self._publish_accepted(inbound)
        try:
            body = await self._body_for_delivery(inbound)
        except ObjectNotFoundError:
            # the body expired or was deleted: nothing will ever deliver this message
            gone = local("5.3.0", "message body not found in the object store")
            await self._publish_failed(inbound, [(r, gone) for r in inbound.recipients])
            return
        await self._publish_failed(inbound, [(rcpt, local("5.1.3", reason)) for rcpt, reason in bad])
        for domain, recipients in groups.items():
            await self._publish_outbound(inbound, domain, recipients, body)
        log.info("router.routed", message_id=inbound.message_id, domains=len(groups),
                 recipients=len(inbound.recipients), unroutable=len(bad))

    async def _body_for_delivery(self, inbound: envelope_pb2.InboundMessage) -> envelope_pb2.Body:
        """The original body reference, or a new one holding the transformed MIME when it changed."""
        if not inbound.options.inline_css:
            return inbound.body
        original = await self._bodies.get(inbound.body)
        if _HTML.search(original) is None:  # no HTML part anywhere: skip the gRPC round trip
            return inbound.body
        result = await self._transformer.inline_css(original, inbound.options.css_engine)
        if result is None or not result.changed:
            return inbound.body
        return await self._bodies.put(f"{inbound.message_id}/transformed", result.mime)

    async def _publish_accepted(self, inbound: envelope_pb2.InboundMessage) -> None:
        for rcpt in inbound.recipients:
            ev = make_event("accepted", account_id=inbound.account_id, message_id=inbound.message_id,
                            recipient=rcpt, mail_from=inbound.mail_from, subject=inbound.subject,
                            size=inbound.body.size, source=inbound.source, tags=list(inbound.tags),
                            metadata=dict(inbound.metadata))
            if inbound.HasField("accepted_at"):
                ev.at.CopyFrom(inbound.accepted_at)
            await publish_event(self._js, ev)

    async def _publish_failed(self, inbound: envelope_pb2.InboundMessage,
                              failures: list[tuple[str, Reply]]) -> None:
        for rcpt, reply in failures:
            ev = make_event("failed", account_id=inbound.account_id, message_id=inbound.message_id,
                            recipient=rcpt, smtp_code=reply.code, enhanced_status=reply.enhanced,
                            response=reply.text, tags=list(inbound.tags), metadata=dict(inbound.metadata))
            await publish_event(self._js, ev)
            metrics.DELIVERIES.labels("failed").inc()

    async def _publish_outbound(self, inbound: envelope_pb2.InboundMessage, domain: str,
                                recipients: list[str], body: envelope_pb2.Body) -> None:
        out = envelope_pb2.OutboundMessage(
            message_id=inbound.message_id, account_id=inbound.account_id, mail_from=inbound.mail_from,
            domain=domain, recipients=recipients, body=body, tags=list(inbound.tags), attempt=0,
            metadata=dict(inbound.metadata))
        if inbound.HasField("accepted_at"):
            out.accepted_at.CopyFrom(inbound.accepted_at)
        else:  # the lifetime counts from acceptance; an envelope without it starts the clock now
            out.accepted_at.GetCurrentTime()
        await self._js.publish(outbound_subject(shard_for(domain, self._shards)), out.SerializeToString(),
                               headers={Header.MSG_ID: outbound_msg_id(inbound.message_id, domain)})
