"""The SMTPeter-compatible API (docs/smtpeter.md): a customer switches by changing the host name.

POST /v1/send
    JSON, form-encoded or multipart body (:mod:`postwire.api_gateway.smtpeter` has the fields). One
    message carries every recipient, with one id per recipient (``recipient_ids``), so the CSS is
    inlined once; the answer is ``{"<id>": "<recipient>", …}`` with 200, after the JetStream PubAck.
POST /v1/resend
    The archived message (postwire.core.archive) sent again under new ids: same recipients, options,
    tags and DSN parameters, the same body bytes.
GET /v1/events/{messageid|email|tags|template}/{value}
    The events of a window of at most a month, in SMTPeter's names (``attempt``, ``delivery``, …), each
    with the stored template its message was built from (``templateid``).

Every route is scoped to the caller's account: another account's message id or template is a 404, like
an unknown one, and its events are never listed.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.api_gateway import offload, personalised
from postwire.api_gateway.accept import accept, apply_options, check_recipient_count, deps_of, take_options
from postwire.api_gateway.archived import archived_body, archived_message
from postwire.api_gateway.auth import Account
from postwire.api_gateway.errors import ApiError, FieldError, InvalidInput, responses
from postwire.api_gateway.formdata import FormError, multipart_pairs, nest, urlencoded_pairs
from postwire.api_gateway.idempotency import fingerprint
from postwire.api_gateway.rawmime import prepare_raw
from postwire.api_gateway.routes import IdemKey
from postwire.api_gateway.settings import ApiSettings
from postwire.api_gateway.smtpeter import (
    SendAnswer,
    SmtpeterEvent,
    SmtpeterPersonalSend,
    SmtpeterResend,
    SmtpeterSend,
    id_time,
    is_personalised,
    parse_utc,
    recipient_ids,
    smtpeter_event,
)
from postwire.core.compose import build
from postwire.core.intake import Submission
from postwire.db import templates
from postwire.db.events_query import EventFilter, list_window, template_ids
from postwire.v1 import envelope_pb2

# the most events one GET /v1/events/{kind}/{value} returns; more: Postwire-Truncated: true
MAX_EVENTS: Final = 10_000
# a template reference of digits is an id (a name is never digits only); more digits than a BIGINT holds
# name no template
TEMPLATE_ID: Final = re.compile(r"^[0-9]{1,18}$")
MAX_QUERY_TAGS: Final = 20
JSON_TYPES: Final = ("application/json",)
FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
Model = TypeVar("Model", bound=BaseModel)


def _request_body(schema: str, form_note: str) -> dict[str, Any]:
    """OpenAPI requestBody: the model for JSON; a form carries the same fields in bracket notation."""
    form = {"schema": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": form_note}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
        **{t: form for t in FORM_TYPES}}}}


FORM_NOTE = ("The JSON fields as form fields: repeat a name (or use `name[]`) for a list, brackets for "
             "objects (`dsn[notify]`, `extra[x-foo]`, `attachments[0][data]`); booleans as true/false/1/0; "
             "an empty field counts as absent.")


def smtpeter_router(settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["smtpeter"])

    @router.post("/send", response_model=SendAnswer, status_code=200,
                 responses=responses(401, 409, 413, 415, 422, 503),
                 response_description="Accepted: durably queued; one id per recipient.",
                 summary="Send a message (SMTPeter-compatible)",
                 description="`recipient`/`recipients` decide delivery; the content is `mime` or the "
                             "fields. Options: `inlinecss` (false), `trackclicks` (true), `trackopens` "
                             "(false), `trackbounces` (true; false when `envelope` is given), "
                             "`preventscam` (false), `tags`, `maxdelivertime`, `stream` "
                             "(transactional|bulk). x-smtpeter-* / X-Postwire-* headers in the message "
                             "override them and are removed. Authenticate with "
                             "`?access_token=` or the Authorization header. See docs/smtpeter.md.",
                 openapi_extra=_request_body("SmtpeterSend", FORM_NOTE))
    async def send(request: Request, account_id: Account, idempotency_key: IdemKey = None) -> JSONResponse:
        data, canonical = await _body(request)
        size = len(canonical)  # the body as parsed: a form's size is that of what it describes
        if is_personalised(data.get("template"), data.get("data"), data.get("recipients")):
            personal = await offload.run(size, _validate, SmtpeterPersonalSend, data)
            return await _send_personalised(request, account_id, idempotency_key, personal, canonical)
        payload = await offload.run(size, _validate, SmtpeterSend, data)
        recipients = payload.envelope_recipients()
        check_recipient_count(len(recipients), settings.max_recipients)

        async def prepare(message_id: str) -> Submission:
            now = datetime.now(UTC)
            if payload.mime is not None:
                try:
                    prepared = await offload.run(
                        size, prepare_raw, payload.mime.encode("utf-8"), payload.envelope,
                        recipients, message_id, settings.message_id_domain, now)
                except InvalidInput as e:
                    raise _in_mime(e) from None
                raw, mail_from, subject = prepared.raw, prepared.mail_from, prepared.subject
            else:
                raw = await offload.run(size, build, payload.draft(), message_id, settings.message_id_domain,
                                        now)
                assert payload.from_ is not None
                mail_from, subject = payload.envelope or payload.from_.address, payload.subject or ""
            raw, found = take_options(raw)
            rdsn = payload.dsn.recipient() if payload.dsn else None
            sub = Submission(
                account_id=account_id, mail_from=mail_from, recipients=recipients, raw=raw, source="api",
                subject=subject, inline_css=payload.inlinecss, tags=payload.tags,
                track_clicks=payload.trackclicks, track_opens=payload.trackopens,
                track_bounces=payload.track_bounces(), prevent_scam=payload.preventscam,
                max_deliver_time=payload.maxdelivertime, dsn=payload.dsn.envelope() if payload.dsn else None,
                stream=payload.stream,
                recipient_dsn={r: rdsn for r in recipients} if rdsn else {},
                recipient_ids=recipient_ids(message_id, recipients))
            return apply_options(sub, found)

        def request_hash() -> str:
            return fingerprint(b"send", canonical)

        return await accept(deps_of(request), request, account_id, idempotency_key, "send", request_hash,
                            prepare, _answer, status_code=200)

    async def _send_personalised(request: Request, account_id: str, idempotency_key: str | None,
                                 payload: SmtpeterPersonalSend, canonical: bytes) -> JSONResponse:
        """A template and/or data: checked here, rendered per recipient by the dispatcher."""
        recipients = payload.envelope_recipients()
        check_recipient_count(len(recipients), settings.max_recipients)
        deps = deps_of(request)
        variables = payload.variables()
        src = await personalised.source(deps, account_id, payload.template, payload.content())
        content = await offload.run(len(canonical), personalised.check, src.content, variables)
        content, option_block = personalised.take_options(content)
        _, found = take_options(option_block)
        envelope = personalised.envelope_sender(content, variables, payload.envelope)

        async def prepare(message_id: str) -> Submission:
            raw = await offload.run(len(canonical), personalised.message, content, variables, envelope,
                                    settings.message_id_domain)
            rdsn = payload.dsn.recipient() if payload.dsn else None
            sub = Submission(
                account_id=account_id, mail_from=envelope, recipients=recipients, raw=raw, source="api",
                subject=content.subject or "", inline_css=payload.inlinecss, tags=payload.tags,
                track_clicks=payload.trackclicks, track_opens=payload.trackopens,
                track_bounces=payload.track_bounces(), prevent_scam=payload.preventscam,
                max_deliver_time=payload.maxdelivertime, dsn=payload.dsn.envelope() if payload.dsn else None,
                stream=payload.stream,
                recipient_dsn={r: rdsn for r in recipients} if rdsn else {},
                recipient_ids=recipient_ids(message_id, recipients),
                personalisation=personalised.personalisation(src))
            return apply_options(sub, found)

        def request_hash() -> str:
            return fingerprint(b"send", canonical)

        return await accept(deps, request, account_id, idempotency_key, "send", request_hash, prepare,
                            _answer, status_code=200)

    @router.post("/resend", response_model=SendAnswer, status_code=200,
                 responses=responses(401, 404, 409, 413, 415, 422, 503),
                 response_description="Accepted: durably queued again; one new id per recipient.",
                 summary="Send an archived message again under new ids",
                 description="`message` is any id a send route returned (a per-recipient id resends to "
                             "that recipient only). Same recipients, options, tags and DSN parameters and "
                             "the same message bytes; `maxdelivertime` is not carried over. Messages are "
                             "kept for POSTWIRE_MESSAGE_RETENTION_DAYS (404 after that).",
                 openapi_extra=_request_body("SmtpeterResend", FORM_NOTE))
    async def resend(request: Request, account_id: Account, idempotency_key: IdemKey = None) -> JSONResponse:
        payload = _validate(SmtpeterResend, (await _body(request))[0])
        deps = deps_of(request)
        original = await archived_message(deps.js, account_id, payload.message)
        raw = await archived_body(deps.bodies, original, payload.message)

        async def prepare(message_id: str) -> Submission:
            return _again(original, raw, message_id)

        def request_hash() -> str:
            return fingerprint(b"resend", payload.message.encode())

        return await accept(deps, request, account_id, idempotency_key, "resend", request_hash, prepare,
                            _answer, status_code=200)

    @router.get("/events/{kind}/{value}", response_model=list[SmtpeterEvent],
                responses=responses(401, 404, 422, 503),
                summary="Events by message id, address, tags or template (SMTPeter-compatible)",
                description="`template/…` takes a stored template's id or name (404 when the account has "
                            "no such template) and lists the events of the messages built from it. "
                            "`start`/`end`: UTC, \"YYYY-MM-DD\" or \"YYYY-MM-DD hh:mm:ss\", end exclusive, "
                            "at most one month apart. Only `start`: the month from it; only `end`: the "
                            "month up to it; neither: for a message id the month from when it was sent, "
                            "else the last month. `tags` (and the value of `tags/…`): ';'-separated, all "
                            "must be on the event. Oldest first; at most 10000 (then the header "
                            "`Postwire-Truncated: true`: narrow the window). Every event carries "
                            "`templateid`: the stored template its message was built from, or null.")
    async def events(request: Request, account_id: Account,
                     kind: Annotated[Literal["messageid", "email", "tags", "template"], Path()],
                     value: Annotated[str, Path(min_length=1, max_length=1000)],
                     start: Annotated[str | None, Query(max_length=19)] = None,
                     end: Annotated[str | None, Query(max_length=19)] = None,
                     tags: Annotated[str | None, Query(max_length=2000)] = None) -> JSONResponse:
        lo, hi = window(kind, value, start, end, datetime.now(UTC))
        wanted = _tags(tags, ("query", "tags"))
        async with deps_of(request).sessions() as s:
            if kind == "messageid":
                f = EventFilter(start=lo, end=hi, tags=wanted, message_id=value)
            elif kind == "email":
                f = EventFilter(start=lo, end=hi, tags=wanted, recipient=value)
            elif kind == "template":
                tid = await _template(s, account_id, value)
                f = EventFilter(start=lo, end=hi, tags=wanted, template_id=tid)
            else:
                f = EventFilter(start=lo, end=hi, tags=[*_tags(value, ("path", "value")), *wanted])
            rows = await list_window(s, account_id, f, MAX_EVENTS + 1)
            of = await template_ids(s, account_id, (r.message_id for r in rows[:MAX_EVENTS]))
        found = [e.model_dump() for r in rows[:MAX_EVENTS]
                 if (e := smtpeter_event(r, of.get(r.message_id))) is not None]
        headers = {"Postwire-Truncated": "true"} if len(rows) > MAX_EVENTS else None
        return JSONResponse(found, headers=headers)

    return router


# ---------------------------------------------------------------------------------------- requests


async def _body(request: Request) -> tuple[dict[str, Any], bytes]:
    """The request body as the JSON object it is or that its form fields describe, and that object as
    canonical JSON (key order and whitespace do not matter: the Idempotency-Key fingerprint)."""
    content_type = request.headers.get("content-type") or "application/json"
    media = content_type.split(";")[0].strip().lower()
    body = await request.body()
    try:
        if media in JSON_TYPES or media.endswith("+json"):
            data = json.loads(body)
        elif media == "application/x-www-form-urlencoded":
            data = nest(urlencoded_pairs(body))
        elif media == "multipart/form-data":
            data = nest(multipart_pairs(body, content_type))
        else:
            raise ApiError(415, "unsupported_media_type", f"send JSON or a form ({', '.join(FORM_TYPES)}); "
                           f"got {media}")
    except json.JSONDecodeError as e:
        raise InvalidInput(("body",), f"invalid JSON: {e.msg}", "json_invalid") from None
    except UnicodeDecodeError:
        raise InvalidInput(("body",), "invalid JSON: not UTF-8", "json_invalid") from None
    except FormError as e:
        raise InvalidInput(("body", e.field) if e.field else ("body",), str(e), "invalid_form") from None
    if not isinstance(data, dict):
        raise InvalidInput(("body",), "the body must be a JSON object", "model_attributes_type")
    try:  # also refuses lone surrogates ("\ud800"), which no message can carry
        canonical = json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(("body",), "invalid JSON: a string holds an unpaired surrogate",
                           "json_invalid") from None
    return data, canonical


def _validate(model: type[Model], data: dict[str, Any]) -> Model:
    """Validate like FastAPI validates a body parameter: errors become the usual 422, under ``body``."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                      for err in e.errors(include_url=False, include_input=False)]) from None


def _in_mime(e: InvalidInput) -> InvalidInput:
    """prepare_raw names ``body``; here the message is the ``mime`` field."""
    out = InvalidInput(("body", "mime"), str(e), "invalid_mime")
    out.errors = [FieldError(loc=["body", "mime", *err.loc[1:]], msg=err.msg, type=err.type)
                  for err in e.errors]
    return out


def _answer(_: str, sub: Submission) -> dict[str, Any]:
    """``{"<id>": "<recipient>", …}`` in recipient order."""
    return {sub.recipient_ids[r]: r for r in sub.recipients}


# ------------------------------------------------------------------------------------------ resend


def _again(original: envelope_pb2.InboundMessage, raw: bytes, message_id: str) -> Submission:
    """The archived message as a new submission: new ids, no deadline (the original's may have passed)."""
    recipients = list(original.recipients)
    opts = original.options
    return Submission(
        account_id=original.account_id, mail_from=original.mail_from, recipients=recipients, raw=raw,
        source="api", subject=original.subject, inline_css=opts.inline_css, css_engine=opts.css_engine,
        tags=list(original.tags), metadata=dict(original.metadata), track_clicks=opts.track_clicks,
        track_opens=opts.track_opens,
        track_bounces=opts.track_bounces if opts.HasField("track_bounces") else True,
        prevent_scam=opts.prevent_scam, dsn=original.dsn if original.HasField("dsn") else None,
        recipient_dsn={r: original.recipient_dsn[r] for r in recipients if r in original.recipient_dsn},
        recipient_ids=recipient_ids(message_id, recipients),
        # the same template version and data: the body holds both
        personalisation=original.personalisation if original.HasField("personalisation") else None,
        stream=original.stream or None)  # the original's lane; an older archive entry's is decided again




# ------------------------------------------------------------------------------------------ events


def add_months(at: datetime, months: int) -> datetime:
    """The same day and time ``months`` later (earlier when negative), clamped to the month's last day."""
    index = at.year * 12 + at.month - 1 + months
    year, month = divmod(index, 12)
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return at.replace(year=year, month=month + 1, day=day)


def window(kind: str, value: str, start: str | None, end: str | None,
           now: datetime) -> tuple[datetime, datetime]:
    """[lo, hi) as SMTPeter defines it, except that a window longer than a month is refused (422)
    rather than silently shortened."""
    lo = _when(start, "start")
    hi = _when(end, "end")
    if lo is not None and hi is not None:
        if lo >= hi:
            raise InvalidInput(("query", "end"), "end must be after start", "invalid_range")
        if hi > add_months(lo, 1):
            raise InvalidInput(("query", "end"), "at most one month between start and end",
                               "range_too_long")
        return lo, hi
    if lo is not None:
        return lo, add_months(lo, 1)
    if hi is not None:
        return add_months(hi, -1), hi
    sent = id_time(value) if kind == "messageid" else None
    if sent is not None:  # the month after the message was accepted
        lo = sent - timedelta(minutes=5)
        return lo, add_months(lo, 1)
    return add_months(now, -1), now + timedelta(seconds=1)


def _when(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_utc(value, name, date_only_ok=True)
    except ValueError as e:  # PydanticCustomError
        raise InvalidInput(("query", name), str(e), "invalid_datetime") from None


async def _template(session: AsyncSession, account_id: str, ref: str) -> int:
    """The id of the account's template ``ref`` (an id or a name); 404 when it has none such. By id a
    deleted template is found too: the messages built from it, and their events, stay. Every template has
    its first version for good, so looking that up finds any of the account's templates by id."""
    if TEMPLATE_ID.match(ref):
        found = await templates.version_of(session, account_id, int(ref), 1)
    else:
        found = await templates.get(session, account_id, ref) if templates.NAME.match(ref) else None
    if found is None:
        raise ApiError(404, "not_found", f"no template {ref[:100]!r} in this account")
    return found.id


def _tags(value: str | None, loc: tuple[str, ...]) -> list[str]:
    tags = [t.strip() for t in (value or "").split(";") if t.strip()]
    if len(tags) > MAX_QUERY_TAGS:
        raise InvalidInput(loc, f"at most {MAX_QUERY_TAGS} tags", "too_many_tags")
    return tags
