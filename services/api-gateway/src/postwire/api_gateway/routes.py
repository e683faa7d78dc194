"""/v1/messages: send as JSON or raw MIME, read a message's per-recipient status.

Both send routes go through :func:`postwire.api_gateway.accept.accept`: reserve the Idempotency-Key (if
any), build the message, make it durable with :meth:`Intake.submit`, then answer 202. The 202 is only
ever written after the JetStream PubAck; NATS trouble answers 503 and nothing is accepted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from postwire.api_gateway import offload, personalised
from postwire.api_gateway.accept import accept, apply_options, check_recipient_count, deps_of, take_options
from postwire.api_gateway.auth import Account
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError, responses
from postwire.api_gateway.idempotency import HEADER, fingerprint
from postwire.api_gateway.rawmime import prepare_raw
from postwire.api_gateway.schemas import (
    MessageDetail,
    QueuedRecipient,
    RecipientState,
    SendRequest,
    SendResponse,
    mailbox_of,
)
from postwire.api_gateway.settings import ApiSettings
from postwire.core.addresses import Mailbox
from postwire.core.compose import Draft, Part, build
from postwire.core.intake import Submission
from postwire.db.models import Message, Recipient

log = structlog.get_logger(__name__)

ACCEPTED = "Accepted: durably queued (JetStream acknowledged it); one entry per envelope recipient."
RAW_TYPES = ("message/rfc822", "text/plain", "application/octet-stream")
RAW_EXAMPLE = ("From: Shop <shop@example.com>\r\nTo: jane@example.org\r\nSubject: Your order\r\n"
               "X-Postwire-Tags: orders\r\n\r\nThanks for your order.\r\n")
IdemKey = Annotated[str | None, Header(alias=HEADER, description="Makes a retry return the first answer "
                                       "instead of sending again (1-255 printable ASCII characters).",
                                       json_schema_extra={"minLength": 1, "maxLength": 255,
                                                          "pattern": "^[ -~]+$"})]


def messages_router(settings: ApiSettings) -> APIRouter:
    """Routes are built per app because the body limits come from settings."""
    router = APIRouter(prefix="/v1/messages", tags=["messages"])
    send_errors = responses(401, 409, 413, 422, 503)

    @router.post("", status_code=202, response_model=SendResponse, responses=send_errors,
                 response_description=ACCEPTED,
                 summary="Send a message described as JSON")
    async def send_json(payload: SendRequest, request: Request, account_id: Account,
                        idempotency_key: IdemKey = None) -> JSONResponse:
        recipients = payload.envelope_recipients()
        check_recipient_count(len(recipients), settings.max_recipients)
        if payload.personalised():
            return await _send_personalised(request, account_id, idempotency_key, payload, recipients)

        async def prepare(message_id: str) -> Submission:
            raw = await offload.run(offload.request_size(request), compose, payload, message_id,
                                    settings.message_id_domain, datetime.now(UTC))
            raw, found = take_options(raw)  # a custom X-Postwire-* header is an option, as in SMTP
            assert payload.from_ is not None  # SendRequest._complete: required without a template
            return apply_options(_submission(account_id, payload.from_.address, recipients, raw, payload),
                                 found)

        return await accept(deps_of(request), request, account_id, idempotency_key, "json",
                            lambda: fingerprint(b"json", _canonical(payload)), prepare, _queued)

    async def _send_personalised(request: Request, account_id: str, idempotency_key: str | None,
                                 payload: SendRequest, recipients: list[str]) -> JSONResponse:
        """A template and/or data: checked here, rendered per recipient by the dispatcher. Each copy is
        addressed to its recipient alone (To: the recipient, no Cc), as a batch send is."""
        size = offload.request_size(request)
        given = personalised.Content(
            subject=payload.subject or None, from_=str(payload.from_) if payload.from_ else None,
            replyto=str(payload.reply_to) if payload.reply_to else None, html=payload.html, text=payload.text,
            headers=list(payload.headers.items()),
            attachments=[Part(a.filename, a.content_type, a.content) for a in payload.attachments])
        variables = personalised.Variables(shared=payload.data or {}, own=payload.own_variables())
        deps = deps_of(request)
        src = await personalised.source(deps, account_id, payload.template, given)
        content = await offload.run(size, personalised.check, src.content, variables)
        content, option_block = personalised.take_options(content)
        _, found = take_options(option_block)
        envelope = personalised.envelope_sender(content, variables, None)

        async def prepare(message_id: str) -> Submission:
            raw = await offload.run(size, personalised.message, content, variables, envelope,
                                    settings.message_id_domain)
            sub = _submission(account_id, envelope, recipients, raw, payload)
            sub.subject = content.subject or ""
            sub.personalisation = personalised.personalisation(src)
            return apply_options(sub, found)

        return await accept(deps, request, account_id, idempotency_key, "json",
                            lambda: fingerprint(b"json", _canonical(payload)), prepare, _queued)

    @router.post("/mime", status_code=202, response_model=SendResponse, response_description=ACCEPTED,
                 responses=responses(401, 409, 413, 415, 422, 503),
                 summary="Send a raw RFC 5322 message",
                 description="The body is the whole message. Recipients come from `to` (repeatable) or "
                             "else the To/Cc/Bcc headers; Bcc is removed before queueing. The envelope "
                             "sender is `from`, or else the From header. Message-ID and Date are added "
                             "when missing. Option headers (`x-smtpeter-inlinecss`, `-trackclicks`, "
                             "`-trackopens`, `-trackbounces`, `-preventscam` with true/false, `-tags` "
                             "comma-separated; or the same names with `X-Postwire-`) set the message's "
                             "options and are removed before queueing; `X-Postwire-Stream: "
                             "transactional|bulk` chooses its lane (default: bulk for several "
                             "recipients or a List-Unsubscribe header, else transactional).",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     t: {"schema": {"type": "string", "format": "binary"}, "example": RAW_EXAMPLE}
                     for t in RAW_TYPES}}})
    async def send_mime(request: Request, account_id: Account, idempotency_key: IdemKey = None,
                        mail_from: Annotated[str | None, Query(alias="from")] = None,
                        to: Annotated[list[str] | None, Query()] = None) -> JSONResponse:
        _check_raw_content_type(request.headers.get("content-type"))
        raw = await request.body()
        rcpts = to or []

        async def prepare(message_id: str) -> Submission:
            prepared = await offload.run(len(raw), prepare_raw, raw, mail_from, rcpts, message_id,
                                         settings.message_id_domain, datetime.now(UTC))
            check_recipient_count(len(prepared.recipients), settings.max_recipients)
            stripped, found = take_options(prepared.raw)
            return apply_options(Submission(account_id=account_id, mail_from=prepared.mail_from,
                                            recipients=prepared.recipients, raw=stripped, source="api",
                                            subject=prepared.subject), found)

        def request_hash() -> str:
            return fingerprint(b"mime", (mail_from or "").encode(), "\n".join(rcpts).encode(), raw)

        return await accept(deps_of(request), request, account_id, idempotency_key, "mime", request_hash,
                            prepare, _queued)

    @router.get("/{message_id}", response_model=MessageDetail, responses=responses(401, 404, 503),
                summary="A message and the delivery state of each recipient",
                description="Written asynchronously from delivery events, so a message accepted a moment "
                            "ago may briefly answer 404.")
    async def get_message(request: Request, account_id: Account,
                          message_id: Annotated[str, Path(max_length=40)]) -> MessageDetail:
        detail = await load_message(deps_of(request), account_id, message_id)
        if detail is None:
            raise ApiError(404, "not_found", f"no message {message_id!r} in this account")
        return detail

    return router


def compose(req: SendRequest, message_id: str, domain: str, now: datetime) -> bytes:
    """The message of a POST /v1/messages request. Bcc is left out of the headers on purpose: it only
    exists in the envelope."""
    assert req.from_ is not None  # SendRequest._complete: required without a template
    draft = Draft(from_=req.from_, to=[mailbox_of(m) for m in req.to], cc=[mailbox_of(m) for m in req.cc],
                  reply_to=[req.reply_to] if req.reply_to else (),
                  subject=req.subject, text=req.text, html=req.html, headers=list(req.headers.items()),
                  attachments=[Part(a.filename, a.content_type, a.content) for a in req.attachments])
    return build(draft, message_id, domain, now)


# the routes that carry a whole message as JSON or a form (attachments base64-encoded in it)
MESSAGE_ROUTES = frozenset({"/v1/messages", "/v1/send"})
RAW_ROUTES = frozenset({"/v1/messages/mime"})


def body_limit(settings: ApiSettings) -> Callable[[str], int]:
    """Request body limits by path, for every route (request_limits.BodyLimit answers 413 over them).

    Raw MIME is the message itself. JSON and forms carry base64 attachments (4/3 larger) and escaped
    text, so they may be up to twice the message limit; the message built from them is then held to
    the exact limit (413 either way). Every other route (domains, webhooks, suppressions, resend,
    dead-letter replay, events, and any path at all, known or not) carries a few fields at most:
    ``api_body_max`` (256 KiB)."""
    json_limit = 2 * settings.max_message_size + 64 * 1024

    def limit_for(path: str) -> int:
        path = path.rstrip("/")
        if path in RAW_ROUTES:
            return settings.max_message_size
        if path in MESSAGE_ROUTES:
            return json_limit
        return settings.api_body_max

    return limit_for


def _canonical(payload: SendRequest) -> bytes:
    """Key order and whitespace of the client's JSON must not matter; attachments enter as digests."""
    def default(o: Any) -> str:
        if isinstance(o, bytes):
            return hashlib.sha256(o).hexdigest()
        if isinstance(o, Mailbox):
            return str(o)
        if isinstance(o, datetime):
            return o.isoformat()
        raise TypeError(type(o).__name__)

    return json.dumps(payload.model_dump(by_alias=True), sort_keys=True, default=default).encode()


def _submission(account_id: str, mail_from: str, recipients: list[str], raw: bytes,
                payload: SendRequest) -> Submission:
    opts = payload.options
    return Submission(account_id=account_id, mail_from=mail_from, recipients=recipients, raw=raw,
                      source="api", subject=payload.subject, inline_css=opts.inline_css,
                      css_engine=opts.css_engine or "", tags=list(payload.tags), metadata=payload.metadata,
                      track_clicks=opts.track_clicks, track_opens=opts.track_opens,
                      track_bounces=opts.track_bounces, prevent_scam=opts.prevent_scam,
                      max_deliver_time=opts.max_deliver_time, stream=payload.stream,
                      unsubscribe=payload.unsubscribe, list_id=payload.list_id)


def _check_raw_content_type(content_type: str | None) -> None:
    media = (content_type or "message/rfc822").split(";")[0].strip().lower()
    if media not in RAW_TYPES:
        raise ApiError(415, "unsupported_media_type", f"send the message as one of {', '.join(RAW_TYPES)} "
                       f"(got {media}); for JSON use POST /v1/messages")


def _queued(message_id: str, sub: Submission) -> dict[str, Any]:
    answer = SendResponse(id=message_id, recipients=[QueuedRecipient(email=r) for r in sub.recipients])
    return answer.model_dump()


async def load_message(deps: Deps, account_id: str, message_id: str) -> MessageDetail | None:
    """A message and its recipients' states (GET /v1/messages/{id} and the console's message page)."""
    async with deps.sessions() as s:
        msg = (await s.execute(select(Message).where(
            Message.id == message_id, Message.account_id == account_id))).scalar()
        if msg is None:
            return None
        rows = (await s.execute(select(Recipient).where(
            Recipient.message_id == message_id, Recipient.account_id == account_id)
            .order_by(Recipient.address))).scalars().all()
    return MessageDetail(
        id=msg.id, from_=msg.mail_from, subject=msg.subject, created_at=msg.created_at,
        tags=list(msg.tags or []), metadata=dict(msg.metadata_ or {}),
        recipients=[RecipientState(email=r.address, status=r.status, smtp_code=r.smtp_code,
                                   enhanced_status=r.enhanced_status, response=r.response,
                                   mx_host=r.mx_host, attempts=r.attempts, updated_at=r.updated_at)
                    for r in rows])
