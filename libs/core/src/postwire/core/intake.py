"""Accepting a message: store its body, publish it to INBOUND, and return only after the PubAck.

ingest-smtp and api-gateway both call :func:`submit`; its success is the moment a message is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import Error as JetStreamError

from postwire.core.bodies import BodyStore
from postwire.core.from_header import address_domains, header_from_domains
from postwire.core.lanes import Stream, default_stream, has_list_unsubscribe, lane_of
from postwire.core.timestamps import stamp_now
from postwire.core.topology import inbound_subject
from postwire.core.unsubscribe import list_id_of
from postwire.v1 import envelope_pb2


class QueueUnavailable(Exception):
    """NATS/JetStream did not confirm the publish: answer a temporary failure, accept nothing."""


@dataclass
class Submission:
    account_id: str
    mail_from: str
    recipients: list[str]
    raw: bytes
    source: str
    subject: str = ""
    inline_css: bool = True
    css_engine: str = ""
    tags: Iterable[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    track_clicks: bool = False
    track_opens: bool = False
    track_bounces: bool = True
    prevent_scam: bool = False
    max_deliver_time: datetime | None = None  # UTC
    dsn: envelope_pb2.Dsn | None = None  # RFC 3461 RET / ENVID
    recipient_dsn: Mapping[str, envelope_pb2.RecipientDsn] = field(default_factory=dict)  # NOTIFY / ORCPT
    recipient_ids: Mapping[str, str] = field(default_factory=dict)  # /v1/send: one message id per recipient
    # set: ``raw`` is a PersonalisedMessage (a template and its data), rendered per recipient by the sender
    personalisation: envelope_pb2.Personalisation | None = None
    # "transactional" | "bulk" as asked for (request, header, or the login's or key's default); None:
    # decided from the message (postwire.core.lanes.default_stream)
    stream: str | None = None
    # Postwire's one-click List-Unsubscribe also when not bulk (docs/unsubscribe.md)
    unsubscribe: bool = False
    # the mailing list the send names; None: the message's List-Id header, if any
    list_id: str | None = None
    # the decoded PersonalisedMessage of ``raw``, once (stream, From and List-Id all read it)
    _content: envelope_pb2.PersonalisedMessage | None = field(default=None, init=False, repr=False,
                                                              compare=False)

    def _template(self) -> envelope_pb2.PersonalisedMessage:
        """A personalised submission's content, decoded on first use (``raw`` is not changed after)."""
        if self._content is None:
            self._content = envelope_pb2.PersonalisedMessage.FromString(self.raw)
        return self._content

    def chosen_stream(self) -> Stream:
        if self.stream is not None:
            return lane_of(self.stream)
        return default_stream(len(self.recipients), self._list_unsubscribe())

    def _list_unsubscribe(self) -> bool:
        if len(self.recipients) > 1:
            return True  # bulk whatever the headers say: not worth reading them
        if self.personalisation is None:
            return has_list_unsubscribe(self.raw)
        return any(h.name.strip().lower() == "list-unsubscribe" for h in self._template().headers)

    def from_domains(self) -> list[str]:
        """The domains of the message's From (the template's From for a personalised one)."""
        if self.personalisation is None:
            return header_from_domains(self.raw)
        return address_domains(getattr(self._template(), "from"))

    def _list_id(self) -> str:
        if self.list_id is not None:
            return self.list_id
        if self.personalisation is None:
            return list_id_of(self.raw)
        found = [h.value for h in self._template().headers if h.name.strip().lower() == "list-id"]
        return list_id_of(f"List-Id: {found[0]}\r\n\r\n".encode()) if found else ""

    def options(self) -> envelope_pb2.SendOptions:
        opts = envelope_pb2.SendOptions(
            inline_css=self.inline_css, css_engine=self.css_engine, track_clicks=self.track_clicks,
            track_opens=self.track_opens, track_bounces=self.track_bounces, prevent_scam=self.prevent_scam,
            unsubscribe=self.unsubscribe, list_id=self._list_id())
        if self.max_deliver_time is not None:
            opts.max_deliver_time.FromDatetime(self.max_deliver_time.astimezone(UTC))
        return opts


class Intake:
    def __init__(self, js: JetStreamContext, bodies: BodyStore, publish_timeout: float = 5.0) -> None:
        self._js = js
        self._bodies = bodies
        self._timeout = publish_timeout

    async def submit(self, sub: Submission, message_id: str) -> None:
        """Durably queue ``sub`` under ``message_id``. A retry with the same id is deduplicated by
        JetStream (Nats-Msg-Id within the stream's duplicate window)."""
        envelope = envelope_pb2.InboundMessage(
            message_id=message_id, account_id=sub.account_id, mail_from=sub.mail_from,
            recipients=sub.recipients, source=sub.source, subject=sub.subject,
            options=sub.options(), tags=list(sub.tags), metadata=dict(sub.metadata),
            recipient_ids=dict(sub.recipient_ids), stream=sub.chosen_stream(),
        )
        if sub.dsn is not None:
            envelope.dsn.CopyFrom(sub.dsn)
        if sub.personalisation is not None:
            envelope.personalisation.CopyFrom(sub.personalisation)
        for rcpt, rdsn in sub.recipient_dsn.items():
            envelope.recipient_dsn[rcpt].CopyFrom(rdsn)
        stamp_now(envelope.accepted_at)
        try:
            envelope.body.CopyFrom(await self._bodies.put(f"{message_id}/original", sub.raw))
            await self._js.publish(inbound_subject(sub.account_id, envelope.stream),
                                   envelope.SerializeToString(), headers={Header.MSG_ID: message_id},
                                   timeout=self._timeout)
        except (TimeoutError, nats.errors.Error, JetStreamError, OSError) as e:
            raise QueueUnavailable(str(e) or type(e).__name__) from e
