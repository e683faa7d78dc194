"""The router: INBOUND → (transformer) → (DKIM) → one OutboundMessage per recipient on its domain's shard.

Order of effects, each idempotent so a redelivery repeats them harmlessly (P3: ack last):
0. bulk mail of an account whose bulk lane is paused (complaints) is not routed: it is moved to
   inbound.<account>.held, or handed back there with a delay, until the account is resumed
   (postwire.dispatcher.bulk_hold);
1. the suppression check: every recipient is looked up in the SUPPRESSIONS KV bucket (concurrent gets,
   no database); a suppressed one is not routed (docs/suppressions.md; an unsubscribe's entry stops bulk
   mail only, of its list when it names one);
2. content transforms (CSS inlining and, when asked, link/pixel rewriting for tracking: once per
   message), then the DKIM signature over the final content, stored as ``<id>/signed``
   (postwire.dispatcher.dkim: which key, cache, database-down behaviour). A tracked message is not
   signed here: its links are placeholders the sender replaces per recipient, and it signs after that
   (postwire.dispatcher.personalise); the links and recipients go to the TRACKING bucket
   (postwire.core.tracking). Nor is bulk mail (or mail that asked for it): the sender adds each
   recipient's one-click List-Unsubscribe link, then signs (postwire.core.unsubscribe). Every message gets
   a Feedback-ID, put in before whoever signs it signs;
3. one batch of publishes, written at once and confirmed together (PipelinedJetStream.publish_many), in
   this order: an "accepted" event per recipient (the recorder creates the message row from it; stable
   event ids), a "suppressed" event per suppressed recipient, the archive entry for POST /v1/resend
   (postwire.core.archive), "failed" events for recipients whose address cannot be routed at all, and an
   OutboundMessage per recipient to outbound.<shard of its domain> (its lane's subject: .bulk for bulk
   mail, postwire.core.lanes) with Nats-Msg-Id
   "<message_id>.<recipient>" and a VERP envelope sender (postwire.core.verp): one SMTP transaction per
   recipient, so an asynchronous bounce names exactly what bounced. A null sender (<>) stays null, and
   so does the customer's own sender when the message asked not to track bounces (trackbounces=false).
   Each carries its recipient's message id (/v1/send gives one per recipient), DSN parameters, expiry
   (maxdelivertime) and tracking reference. A message that has to wait in step 2 (transformer or DKIM
   keys unavailable) publishes its accepted events before going back, so it shows as queued meanwhile;
4. ack. Any publish failure → nak with a delay; nothing is acked before its effects are durable. An
   ack or nak that cannot be sent while NATS fails over is left to JetStream's redelivery after ack_wait
   (postwire.core.settle): the message is routed again and its publishes, under the same ids, are
   deduplicated.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from email import message_from_bytes, policy
from email.message import EmailMessage

import google.protobuf.message
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import Header
from nats.js.errors import ObjectNotFoundError

from postwire.core import personalised, settle, tracking, unsubscribe
from postwire.core.archive import archive_messages
from postwire.core.bodies import BodyStore
from postwire.core.events import event_message, make_event
from postwire.core.jetstream import PipelinedJetStream
from postwire.core.lanes import BULK, lane_of
from postwire.core.settings import verp_secret_bytes
from postwire.core.sharding import shard_for
from postwire.core.timestamps import stamp_now
from postwire.core.topology import TRACKING, outbound_subject
from postwire.core.verp import encode as verp_encode
from postwire.db.suppressions import MirrorUnavailable
from postwire.dispatcher import metrics
from postwire.dispatcher.bulk_hold import BulkHold
from postwire.dispatcher.dkim import DKIM_SIGNED, DkimSigner, KeysUnavailable, from_domain
from postwire.dispatcher.outcomes import Reply, local
from postwire.dispatcher.recipient_domains import group_by_domain
from postwire.dispatcher.settings import DispatcherSettings
from postwire.dispatcher.suppressed import SuppressionCheck
from postwire.dispatcher.transform import TransformerClient, TransformerUnavailable, css_engine
from postwire.v1 import envelope_pb2, transformer_pb2

log = structlog.get_logger(__name__)

# how long a message waits after NATS itself failed us mid-route
PUBLISH_RETRY_S = 2.0


# a shared body larger than this in all its OutboundMessages together is kept in the object store and
# referenced, rather than copied into each (10,000 recipients of a 30 KB message would be 300 MB)
SHARED_INLINE_MAX = 8 * 2**20

# a superset test: any MIME part of type text/html has this string in its headers, looked for as is (a
# fast scan), else in the lower-cased message (33 us for 33 KB; a case-insensitive regex costs 6 times more)
_HTML = b"text/html"


_NULL_SENDERS = ("", "<>")

# one publish of a batch: (subject, payload, headers)
Publish = tuple[str, bytes, dict[str, str]]


def outbound_msg_id(message_id: str, recipient: str) -> str:
    """Stable per message and recipient; a non-ASCII or spaced address is replaced by its digest so the
    header value stays plain ASCII."""
    rcpt = recipient.lower()
    if not rcpt.isascii() or any(c.isspace() for c in rcpt):
        rcpt = hashlib.sha256(rcpt.encode("utf-8")).hexdigest()[:32]
    return f"{message_id}.{rcpt}"


def message_id_of(inbound: envelope_pb2.InboundMessage, recipient: str) -> str:
    """The recipient's own message id (/v1/send gives one per recipient), else the message's."""
    return inbound.recipient_ids.get(recipient) or inbound.message_id


@dataclass(frozen=True)
class Prepared:
    """The body to deliver; its content when it was read on the way (so signing does not read it
    again); and, for a tracked message, the placeholders' nonce and the original links by index."""

    body: envelope_pb2.Body
    content: bytes | None
    nonce: str = ""
    links: list[str] = field(default_factory=list)


class UnreadableBody(Exception):
    """A personalised message whose body is gone or is not a PersonalisedMessage."""


@dataclass(frozen=True)
class Routable:
    """What every OutboundMessage of a message carries: the body, the tracking nonce, and for a
    personalised message each recipient's own variables (JSON, by address)."""

    body: envelope_pb2.Body
    nonce: str = ""
    own_data: Mapping[str, bytes] = field(default_factory=dict)
    # what the sender adds to each copy before signing it: Feedback-ID, List-Unsubscribe (docs/unsubscribe.md)
    headers: envelope_pb2.DeliveryHeaders | None = None


@dataclass(frozen=True)
class ReturnPath:
    """How envelope senders are rewritten: VERP on ``bounce_domain``, tagged with ``secret``."""

    secret: bytes
    bounce_domain: str

    def for_recipient(self, mail_from: str, message_id: str, recipient: str) -> str:
        if mail_from.strip() in _NULL_SENDERS:  # a bounce or auto-reply: must never get a bounce back
            return mail_from
        try:
            return verp_encode(message_id, recipient, self.secret, self.bounce_domain)
        except ValueError as e:  # an id not made by Postwire: keep the original sender rather than stall
            log.warning("router.verp_unavailable", message_id=message_id, error=str(e))
            return mail_from


class Router:
    def __init__(self, js: PipelinedJetStream, bodies: BodyStore, transformer: TransformerClient, *,
                 shards: int, transformer_retry_s: float, signer: DkimSigner, return_path: ReturnPath,
                 signing_retry_s: float, suppressions: SuppressionCheck, tracking_key: bytes,
                 tracking_base_url: str, hold: BulkHold | None = None) -> None:
        self._js = js
        self._bodies = bodies
        self._transformer = transformer
        self._shards = shards
        self._transformer_retry_s = transformer_retry_s
        self._signer = signer
        self._return_path = return_path
        self._signing_retry_s = signing_retry_s
        self._suppressions = suppressions
        self._tracking_key = tracking_key
        self._tracking_base_url = tracking_base_url.rstrip("/")
        self._hold = hold  # bulk mail of accounts whose bulk lane is paused waits (bulk_hold.py)

    async def handle(self, msg: Msg) -> None:
        try:
            inbound = envelope_pb2.InboundMessage.FromString(msg.data)
        except google.protobuf.message.DecodeError:
            log.error("router.poison_message", subject=msg.subject)
            metrics.ROUTED.labels("poison").inc()
            await settle.term(msg)
            return
        bound = log.bind(message_id=inbound.message_id, account_id=inbound.account_id)
        try:
            if self._hold is not None and await self._hold.holds(msg, inbound):
                return
            await self.route(inbound)
        except TransformerUnavailable as e:
            bound.warning("router.transformer_unavailable", error=str(e), retry_in=self._transformer_retry_s)
            metrics.ROUTED.labels("retry").inc()
            await settle.nak(msg, delay=self._transformer_retry_s)
            return
        except MirrorUnavailable as e:
            # the bucket lives in NATS: when it cannot answer, neither could the publishes that follow
            bound.warning("router.suppressions_unavailable", error=str(e), retry_in=PUBLISH_RETRY_S)
            metrics.ROUTED.labels("retry").inc()
            await settle.nak(msg, delay=PUBLISH_RETRY_S)
            return
        except KeysUnavailable as e:
            bound.warning("router.dkim_keys_unavailable", error=str(e), retry_in=self._signing_retry_s)
            metrics.ROUTED.labels("retry").inc()
            await settle.nak(msg, delay=self._signing_retry_s)
            return
        except (nats.errors.Error, TimeoutError, OSError) as e:
            bound.warning("router.publish_failed", error=str(e) or type(e).__name__, retry_in=PUBLISH_RETRY_S)
            metrics.ROUTED.labels("retry").inc()
            await settle.nak(msg, delay=PUBLISH_RETRY_S)
            return
        metrics.ROUTED.labels("routed").inc()
        await settle.ack(msg)  # not sent (NATS failing over): routed again after ack_wait, deduplicated

    async def route(self, inbound: envelope_pb2.InboundMessage) -> None:
        """Publish every effect of ``inbound``; raises on anything that should be retried.

        The effects go out as one batch (one write, one wait for all the PubAcks): the accepted events
        first, so in EVENTS they come before anything that follows from delivery. A message that must
        wait (transformer or DKIM keys unavailable) has its accepted events published before it goes
        back, so it shows as queued meanwhile."""
        groups, bad = group_by_domain(list(inbound.recipients))
        suppressed = await self._suppressions.suppressed(inbound.account_id,
                                                         [r for rcpts in groups.values() for r in rcpts],
                                                         lane_of(inbound.stream), inbound.options.list_id)
        if suppressed:
            groups = {d: kept for d, rcpts in groups.items()
                      if (kept := [r for r in rcpts if r not in suppressed])}
        content = await self._personalised_content(inbound)
        first = self._accepted(inbound, content) + self._suppressed(inbound, suppressed)
        unroutable = self._failed(inbound, [(rcpt, local("5.1.3", reason)) for rcpt, reason in bad])
        if not groups:  # nothing left to deliver: skip the body work
            await self._js.publish_many(first + unroutable)
            self._count(suppressed=len(suppressed), failed=len(bad))
            log.debug("router.routed", message_id=inbound.message_id, domains=0,
                      recipients=len(inbound.recipients), unroutable=len(bad), suppressed=len(suppressed))
            return
        try:
            routable = await self._prepare(inbound, sum(map(len, groups.values())), content)
        except (TransformerUnavailable, KeysUnavailable):
            await self._js.publish_many(first)  # recorded as accepted while it waits
            raise
        except (ObjectNotFoundError, UnreadableBody) as e:
            # the body expired or was deleted, or is not what a personalised message must be: nothing
            # will ever deliver this message
            gone = (local("5.6.0", "the personalised message cannot be read") if isinstance(e, UnreadableBody)
                    else local("5.3.0", "message body not found in the object store"))
            await self._js.publish_many(first + self._failed(inbound, [(r, gone) for r in inbound.recipients
                                                                       if r not in suppressed]))
            self._count(suppressed=len(suppressed), failed=len(inbound.recipients) - len(suppressed))
            return
        index = {rcpt: i for i, rcpt in enumerate(inbound.recipients)}
        outbound = [self._outbound(inbound, domain, rcpt, routable, index[rcpt])
                    for domain, recipients in groups.items() for rcpt in recipients]
        await self._js.publish_many(first + archive_messages(inbound) + unroutable + outbound)
        self._count(suppressed=len(suppressed), failed=len(bad))
        log.debug("router.routed", message_id=inbound.message_id, domains=len(groups),
                  recipients=len(inbound.recipients), unroutable=len(bad), suppressed=len(suppressed))

    async def _personalised_content(self, inbound: envelope_pb2.InboundMessage,
                                    ) -> envelope_pb2.PersonalisedMessage | None:
        """A personalised message's body, read once for the accepted events' subjects and the routing;
        None for other messages, or when it cannot be read (routing then fails its recipients)."""
        if not inbound.HasField("personalisation"):
            return None
        try:
            return envelope_pb2.PersonalisedMessage.FromString(await self._bodies.get(inbound.body))
        except (ObjectNotFoundError, google.protobuf.message.DecodeError):
            return None

    async def _prepare(self, inbound: envelope_pb2.InboundMessage, copies: int,
                       content: envelope_pb2.PersonalisedMessage | None = None) -> Routable:
        """The body to deliver (transformed, and signed unless tracked or personalised), the tracking
        nonce, and a personalised message's per-recipient variables."""
        if inbound.HasField("personalisation"):
            if content is None:
                raise UnreadableBody(inbound.message_id)
            sender = getattr(content, "from")
            head = f"From: {sender}\r\n\r\n".encode() if sender.isascii() and "\n" not in sender else b""
            return replace(await self._personalised(inbound, copies, content),
                           headers=await self._delivery_headers(inbound, lambda: head))
        prepared = await self._body_for_delivery(inbound)

        async def raw() -> bytes:
            return prepared.content if prepared.content is not None else await self._bodies.get(prepared.body)

        headers = await self._delivery_headers(inbound, raw)
        if prepared.nonce or headers.unsubscribe_base:  # personalised per recipient, signed by the sender
            if prepared.nonce:
                await self._remember_links(inbound, prepared.links)
            return Routable(await self._shared(inbound, prepared.body, copies), prepared.nonce,
                            headers=headers)
        signed = await self._signed(inbound, prepared.body, prepared.content, headers.feedback_id)
        if signed is not prepared.body:  # signed with its Feedback-ID: nothing left for the sender to add
            headers.feedback_id = ""
        return Routable(await self._shared(inbound, signed, copies), headers=headers)

    async def _delivery_headers(self, inbound: envelope_pb2.InboundMessage,
                                raw: Callable[[], Awaitable[bytes] | bytes]) -> envelope_pb2.DeliveryHeaders:
        """Feedback-ID for every message; Postwire's one-click List-Unsubscribe for bulk mail and mail
        whose send asked for it, at the From domain's tracking host (``raw`` gives the message's head
        for that, read only then)."""
        lane = lane_of(inbound.stream)
        headers = envelope_pb2.DeliveryHeaders(
            feedback_id=unsubscribe.feedback_id(list(inbound.tags), inbound.account_id, lane))
        if lane == BULK or inbound.options.unsubscribe:
            head = raw()
            headers.unsubscribe_base = await self._tracking_base(
                inbound.account_id, head if isinstance(head, bytes) else await head)
            headers.list_id = inbound.options.list_id
        return headers

    async def _shared(self, inbound: envelope_pb2.InboundMessage, body: envelope_pb2.Body,
                      copies: int) -> envelope_pb2.Body:
        """``body``, moved to the object store when its copies in every OutboundMessage would be large."""
        if body.WhichOneof("location") != "inline" or body.size * copies <= SHARED_INLINE_MAX:
            return body
        return await self._bodies.put(f"{inbound.message_id}/shared", body.inline, inline_max=0)

    async def _personalised(self, inbound: envelope_pb2.InboundMessage, copies: int,
                            content: envelope_pb2.PersonalisedMessage) -> Routable:
        """A personalised message is rendered by the sender, per recipient. Here its HTML gets the CSS
        inlined (and links tracked) once, around the template's tags; the recipients' own variables
        are taken out, each to travel in its recipient's OutboundMessage. Signing waits for the
        rendered message (the sender)."""
        own = dict(content.recipient_data)
        content.ClearField("recipient_data")
        nonce = ""
        opts = inbound.options
        if content.HasField("html") and not content.inlined and (
                opts.inline_css or opts.track_clicks or opts.track_opens):
            prepared = await self._transform_template(inbound, content)
            if prepared is not None and prepared.content is not None:
                content.html, content.inlined = prepared.content.decode("utf-8"), True
                if prepared.nonce:
                    await self._remember_links(inbound, prepared.links)
                    nonce = prepared.nonce
        body = await self._bodies.put(f"{inbound.message_id}/personalised", content.SerializeToString())
        return Routable(await self._shared(inbound, body, copies), nonce, own)

    async def _transform_template(self, inbound: envelope_pb2.InboundMessage,
                                  content: envelope_pb2.PersonalisedMessage) -> Prepared | None:
        """The template's HTML with the CSS inlined and links tracked, its tags kept as written
        (TransformOptions.template); None when the transformer left it as it was."""
        opts = inbound.options
        tracked = opts.track_clicks or opts.track_opens
        nonce = tracking.nonce_for(self._tracking_key, inbound.message_id) if tracked else ""
        sender = getattr(content, "from")
        head = f"From: {sender}\r\n" if sender.isascii() and "\n" not in sender and "{" not in sender else ""
        mime = (head.encode() + b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes(content.html.encode("utf-8")).replace(b"\n", b"\r\n"))
        options = transformer_pb2.TransformOptions(
            inline_css=opts.inline_css, css_engine=css_engine(opts.css_engine),
            track_clicks=opts.track_clicks, track_opens=opts.track_opens, prevent_scam=opts.prevent_scam,
            nonce=nonce, template=True)
        if tracked:
            base = await self._tracking_base(inbound.account_id, mime)
            options.click_url_prefix = base + tracking.CLICK_PATH
            options.open_url_prefix = base + tracking.OPEN_PATH
        result = await self._transformer.transform(mime, options)
        if result is None or not result.changed:
            return None
        part = message_from_bytes(result.mime, policy=policy.default)
        assert isinstance(part, EmailMessage)
        html = str(part.get_content()).encode("utf-8")
        if not result.links and not result.open_pixel:
            return Prepared(inbound.body, html)
        return Prepared(inbound.body, html, nonce, list(result.links))

    @staticmethod
    def _count(*, suppressed: int, failed: int) -> None:
        if suppressed:
            metrics.DELIVERIES.labels("suppressed").inc(suppressed)
        if failed:
            metrics.DELIVERIES.labels("failed").inc(failed)

    def _suppressed(self, inbound: envelope_pb2.InboundMessage, suppressed: dict[str, str]) -> list[Publish]:
        """A "suppressed" event (reason = the entry's) per suppressed recipient. The event id is stable,
        so a redelivered message repeats it harmlessly."""
        return [event_message(make_event("suppressed", account_id=inbound.account_id,
                                         message_id=message_id_of(inbound, rcpt), recipient=rcpt,
                                         reason=reason, tags=list(inbound.tags),
                                         metadata=dict(inbound.metadata)))
                for rcpt, reason in suppressed.items()]

    async def _body_for_delivery(self, inbound: envelope_pb2.InboundMessage) -> Prepared:
        """The original body reference, or a new one holding the transformed MIME when it changed."""
        opts = inbound.options
        tracked = opts.track_clicks or opts.track_opens
        if not opts.inline_css and not tracked:
            return Prepared(inbound.body, None)
        original = await self._bodies.get(inbound.body)
        if _HTML not in original and _HTML not in original.lower():  # no HTML part: skip the gRPC round trip
            return Prepared(inbound.body, original)
        nonce = tracking.nonce_for(self._tracking_key, inbound.message_id) if tracked else ""
        options = transformer_pb2.TransformOptions(
            inline_css=opts.inline_css, css_engine=css_engine(opts.css_engine),
            track_clicks=opts.track_clicks, track_opens=opts.track_opens, prevent_scam=opts.prevent_scam,
            nonce=nonce)
        if tracked:
            base = await self._tracking_base(inbound.account_id, original)
            options.click_url_prefix = base + tracking.CLICK_PATH
            options.open_url_prefix = base + tracking.OPEN_PATH
        result = await self._transformer.transform(original, options)
        if result is None or not result.changed:
            return Prepared(inbound.body, original)
        body = await self._bodies.put(f"{inbound.message_id}/transformed", result.mime)
        if not result.links and not result.open_pixel:
            return Prepared(body, result.mime)
        return Prepared(body, result.mime, nonce, list(result.links))

    async def _tracking_base(self, account_id: str, raw: bytes) -> str:
        """https://<the From domain's tracking host>, else the configured base URL (the API's host)."""
        domain = from_domain(raw)
        keys = await self._signer.keys_for(account_id)
        host = keys.tracking_host_for(domain) if domain else None
        return f"https://{host}" if host else self._tracking_base_url

    async def _remember_links(self, inbound: envelope_pb2.InboundMessage, links: list[str]) -> None:
        """The TRACKING entry the redirect and the pixel read: links by index, recipients by index."""
        entry = tracking.TrackedMessage(
            account_id=inbound.account_id, links=links, recipients=list(inbound.recipients),
            message_ids={r: i for r, i in inbound.recipient_ids.items() if i != inbound.message_id},
            tags=list(inbound.tags), metadata=dict(inbound.metadata))
        kv = await self._js.key_value(TRACKING)
        await kv.put(inbound.message_id, entry.to_bytes())

    async def _signed(self, inbound: envelope_pb2.InboundMessage, body: envelope_pb2.Body,
                      content: bytes | None, feedback: str = "") -> envelope_pb2.Body:
        """``body`` with ``Feedback-ID: feedback``, DKIM-signed with the account's key for the From domain,
        or ``body`` itself when the account has no such key. Mail of accounts without domains is not even
        read."""
        keys = await self._signer.keys_for(inbound.account_id)
        if not keys:
            return body
        raw = content if content is not None else await self._bodies.get(body)
        signed = await self._signer.sign(unsubscribe.add_headers(raw, feedback=feedback), keys)
        if signed is None:
            return body
        data, key = signed
        DKIM_SIGNED.labels(key.algorithm).inc()
        log.debug("router.dkim_signed", message_id=inbound.message_id, d=key.domain, s=key.selector)
        return await self._bodies.put(f"{inbound.message_id}/signed", data)

    @staticmethod
    def _accepted(inbound: envelope_pb2.InboundMessage,
                  content: envelope_pb2.PersonalisedMessage | None = None) -> list[Publish]:
        """An "accepted" event per recipient; a personalised message's carries the recipient's own
        subject as rendered."""
        found = []
        rendered = personalised.subjects(content, list(inbound.recipients)) if content is not None else {}
        for rcpt in inbound.recipients:
            ev = make_event("accepted", account_id=inbound.account_id,
                            message_id=message_id_of(inbound, rcpt), recipient=rcpt,
                            mail_from=inbound.mail_from, subject=rendered.get(rcpt, inbound.subject),
                            size=inbound.body.size,
                            source=inbound.source, tags=list(inbound.tags),
                            metadata=dict(inbound.metadata),
                            template_id=inbound.personalisation.template_id)
            if inbound.HasField("accepted_at"):
                ev.at.CopyFrom(inbound.accepted_at)
            if inbound.HasField("dsn"):
                ev.dsn.CopyFrom(inbound.dsn)
            if rcpt in inbound.recipient_dsn:
                ev.recipient_dsn.CopyFrom(inbound.recipient_dsn[rcpt])
            found.append(event_message(ev))
        return found

    @staticmethod
    def _failed(inbound: envelope_pb2.InboundMessage, failures: list[tuple[str, Reply]]) -> list[Publish]:
        return [event_message(make_event("failed", account_id=inbound.account_id,
                                         message_id=message_id_of(inbound, rcpt), recipient=rcpt,
                                         tags=list(inbound.tags), metadata=dict(inbound.metadata),
                                         **reply.event_fields()))
                for rcpt, reply in failures]

    def _outbound(self, inbound: envelope_pb2.InboundMessage, domain: str, recipient: str,
                  routable: Routable, index: int) -> Publish:
        message_id = message_id_of(inbound, recipient)
        nonce = routable.nonce
        out = envelope_pb2.OutboundMessage(
            message_id=message_id, account_id=inbound.account_id,
            mail_from=self._mail_from(inbound, recipient), domain=domain, recipients=[recipient],
            body=routable.body, tags=list(inbound.tags), attempt=0,
            metadata=dict(inbound.metadata), stream=lane_of(inbound.stream))
        if inbound.HasField("personalisation"):
            out.personalised.CopyFrom(envelope_pb2.Personalised(
                data=routable.own_data.get(recipient, b""),
                template_id=inbound.personalisation.template_id))
        if inbound.HasField("accepted_at"):
            out.accepted_at.CopyFrom(inbound.accepted_at)
        else:  # the lifetime counts from acceptance; an envelope without it starts the clock now
            stamp_now(out.accepted_at)
        if inbound.options.HasField("max_deliver_time"):
            out.expires_at.CopyFrom(inbound.options.max_deliver_time)
        if inbound.HasField("dsn"):
            out.dsn.CopyFrom(inbound.dsn)
        if recipient in inbound.recipient_dsn:
            out.recipient_dsn.CopyFrom(inbound.recipient_dsn[recipient])
        if nonce:
            out.tracking.CopyFrom(envelope_pb2.Tracking(nonce=nonce, group_id=inbound.message_id,
                                                        recipient_index=index))
        headers = routable.headers
        if headers is not None and (headers.feedback_id or headers.unsubscribe_base):
            out.headers.CopyFrom(headers)
        return (outbound_subject(shard_for(domain, self._shards), out.stream), out.SerializeToString(),
                {Header.MSG_ID: outbound_msg_id(inbound.message_id, recipient)})

    def _mail_from(self, inbound: envelope_pb2.InboundMessage, recipient: str) -> str:
        """VERP, unless the message asked to keep its own envelope sender (trackbounces=false)."""
        if inbound.options.HasField("track_bounces") and not inbound.options.track_bounces:
            return inbound.mail_from
        return self._return_path.for_recipient(inbound.mail_from, message_id_of(inbound, recipient),
                                               recipient)


def make_router(js: PipelinedJetStream, bodies: BodyStore, transformer: TransformerClient,
                settings: DispatcherSettings, signer: DkimSigner, suppressions: SuppressionCheck,
                hold: BulkHold | None = None) -> Router:
    """The router with its VERP return path; ``signer`` is shared with the sender, ``suppressions`` kept
    current by a task of the caller's (SuppressionCheck.follow)."""
    secret = verp_secret_bytes(settings)
    return_path = ReturnPath(secret, settings.bounce_domain)
    return Router(js, bodies, transformer, shards=settings.shards,
                  transformer_retry_s=settings.transformer_retry_s, signer=signer,
                  return_path=return_path, signing_retry_s=settings.dkim_retry_s, suppressions=suppressions,
                  tracking_key=tracking.tracking_key(secret), tracking_base_url=settings.tracking_base_url,
                  hold=hold)
