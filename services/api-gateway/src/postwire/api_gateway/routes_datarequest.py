"""Data subject requests for one address (docs/data-requests.md): what the account holds about it, as JSON,
and its erasure, each recorded in an audit row that names the address only by its pseudonym.

GET /v1/data-requests/{address}
    The export: the address's messages (with its recipient row), events (opens and clicks with their IP
    and user agent), suppressions, and the archived copy of each message as /v1/mime gives it. Bounded
    (:data:`MAX_MESSAGES`, :data:`MAX_EVENTS`, :data:`MAX_ARCHIVED`, :data:`MAX_ARCHIVED_BYTES`); what
    was cut is named in ``truncated``.
DELETE /v1/data-requests/{address}
    The erasure, in this order: PostgreSQL in one transaction (postwire.db.data_requests.erase: events and
    recipients pseudonymised and scrubbed, the suppression kept as a hash), the SUPPRESSIONS bucket (the
    hashed entry, under the same key, so the address stays suppressed), the TRACKING bucket (the address
    replaced by its pseudonym, so a later click records no address), the message archive (the recipient
    taken out, a message left to no one deleted with its body), then the audit row. A failure in NATS is
    a 503 and repeating the request completes it: every step is idempotent and finds what an earlier
    attempt already renamed.
GET /v1/data-requests
    The audit records, newest first.
POST /v1/datarequest, GET /v1/datarequest/{id}[/status]
    SMTPeter's two-step export: the POST records the request and answers its id; the GET answers
    ``{"info": {"type": "email", "id": <address>}, "data": [[messages], [events], [suppressions],
    [archived copies]]}``, assembled when asked, so the status is always ``finished``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import nats.errors
import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel, Field

from postwire.api_gateway.archived import archived_copy, archived_message
from postwire.api_gateway.auth import Account
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError, InvalidInput, responses
from postwire.api_gateway.formdata import FormError, multipart_pairs, urlencoded_pairs
from postwire.core import archive, tracking
from postwire.core.addresses import has_line_break
from postwire.core.topology import TRACKING
from postwire.db import data_requests as store
from postwire.db.models import DataRequest
from postwire.db.suppressions import MirrorUnavailable, SuppressionMirror

log = structlog.get_logger(__name__)

MAX_MESSAGES: Final = 1000
MAX_EVENTS: Final = 10_000
MAX_ARCHIVED: Final = 50  # archived copies in one export, the newest messages' last
MAX_ARCHIVED_BYTES: Final = 10 * 1024 * 1024  # all copies together; a larger one is named, not included
# how long the id of SMTPeter's two-step export can be read (its address is kept that long)
EXPORT_TTL: Final = timedelta(days=7)
NOT_AVAILABLE: Final = "Data not available (yet)."
LIMITS: Final = {"messages": MAX_MESSAGES, "events": MAX_EVENTS, "archived": MAX_ARCHIVED,
                 "archived_bytes": MAX_ARCHIVED_BYTES}

AddressPath = Annotated[str, Path(max_length=320, description="The data subject's address (any case).",
                                  examples=["jane@example.org"])]


class ArchivedCopy(BaseModel):
    message_id: str
    size: int = Field(description="Bytes of the MIME as accepted.")
    encoding: str | None = Field(description="`utf-8` (``content`` is the MIME as text) or `base64`; null "
                                             "when the copy was left out (see `omitted`).")
    content: str | None = None
    omitted: str | None = Field(default=None, description="Why the copy is not included (over the size "
                                                          "limit): read it with GET /v1/mime/{id}.")


class DataExport(BaseModel):
    request_id: str = Field(description="The audit record of this export.")
    address: str
    generated_at: datetime
    messages: list[dict[str, Any]] = Field(description="The messages the address received: the message "
                                                       "(`mail_from`, `subject`, `tags`, …) and its "
                                                       "`recipient` row (status, last reply, attempts).")
    events: list[dict[str, Any]] = Field(description="Every event about the address, oldest first, as "
                                                     "GET /v1/events shows them (`opened`/`clicked` carry "
                                                     "`client_ip` and `user_agent`).")
    suppressions: list[dict[str, Any]] = Field(description="Its suppression, as written or (`erased`) "
                                                           "kept as a hash.")
    archived: list[ArchivedCopy] = Field(description="The archived copy of each message still in the "
                                                     "archive, as GET /v1/mime/{id} gives it.")
    limits: dict[str, int]
    truncated: dict[str, bool] = Field(description="Per section: true when the limit cut it short.")


class ErasureOut(BaseModel):
    request_id: str = Field(description="The audit record of this erasure.")
    subject: str = Field(description="The pseudonym that now stands for the address in this account.")
    erased: dict[str, int] = Field(description="What this request changed: `events`, `recipients`, "
                                               "`messages` (subject and metadata blanked), `suppressions` "
                                               "(converted to a hash), `webhook_log`, `tracking` "
                                               "entries, `archived` entries. All 0 when the address had "
                                               "been erased already.")


class DataRequestOut(BaseModel):
    id: str
    kind: str = Field(description="export | erasure")
    subject: str = Field(description="The address's pseudonym (the address itself is not kept).")
    requested_by: str = Field(description="The id of the API key that asked.")
    counts: dict[str, int]
    created_at: datetime

    @classmethod
    def of(cls, row: DataRequest) -> DataRequestOut:
        return cls(id=row.id, kind=row.kind, subject=row.subject, requested_by=row.requested_by,
                   counts=dict(row.counts or {}), created_at=row.created_at)


class DataRequestList(BaseModel):
    data_requests: list[DataRequestOut]


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def subject_address(value: str, loc: tuple[str, ...] = ("path", "address")) -> str:
    """The address as stored (trimmed, lower-cased). Not checked like a new recipient: whatever was
    stored for it must be reachable, so only what cannot be an address is refused."""
    address = store.normalise(value)
    if not address or "@" not in address or has_line_break(address) or len(address) > 320:
        raise InvalidInput(loc, "not an e-mail address", "invalid_address")
    return address


def requested_by(request: Request) -> str:
    """The id of the API key the request authenticated with (``pw_<id>_<secret>``); never the secret."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else \
        request.query_params.get("access_token", "")
    key_id, sep, _ = token.removeprefix("pw_").partition("_")
    return key_id[:64] if sep and token.startswith("pw_") else "unknown"


async def build_export(request: Request, account_id: str, address: str
                       ) -> tuple[store.Export, list[ArchivedCopy], bool]:
    """PostgreSQL's part and the archived copies (the last :data:`MAX_ARCHIVED` messages'), and whether
    the copies were cut short."""
    deps = _deps(request)
    async with deps.sessions() as s:
        found = await store.export(s, account_id, address, max_messages=MAX_MESSAGES, max_events=MAX_EVENTS)
    ids = [m["id"] for m in found.messages]
    copies: list[ArchivedCopy] = []
    budget = MAX_ARCHIVED_BYTES
    for message_id in ids[-MAX_ARCHIVED:]:
        try:
            message = await archived_message(deps.js, account_id, message_id)
            raw = await archived_copy(deps.bodies, message, message_id)
        except ApiError as e:
            if e.status_code == 404:  # aged out of the archive, or never archived (all suppressed)
                continue
            raise
        if len(raw) > budget:
            copies.append(ArchivedCopy(message_id=message_id, size=len(raw), encoding=None,
                                       omitted="over the export's size limit"))
            continue
        budget -= len(raw)
        try:
            copies.append(ArchivedCopy(message_id=message_id, size=len(raw), encoding="utf-8",
                                       content=raw.decode("utf-8")))
        except UnicodeDecodeError:
            copies.append(ArchivedCopy(message_id=message_id, size=len(raw), encoding="base64",
                                       content=base64.b64encode(raw).decode("ascii")))
    return found, copies, len(ids) > MAX_ARCHIVED


def _export_counts(found: store.Export, copies: list[ArchivedCopy]) -> dict[str, int]:
    return {"messages": len(found.messages), "events": len(found.events),
            "suppressions": len(found.suppressions), "archived": sum(c.encoding is not None for c in copies)}


async def erase(request: Request, account_id: str, address: str) -> tuple[str, dict[str, int]]:
    """The whole erasure (the module's docstring has the order); the audit row's id and the counts."""
    deps = _deps(request)
    async with deps.sessions.begin() as s:
        done = await store.erase(s, account_id, address)
    counts = done.counts()
    try:
        if done.suppression is not None:
            await SuppressionMirror(deps.js).put(done.suppression)
        async with deps.sessions() as s:
            ids = await store.message_ids(s, account_id, address)
        counts["tracking"], counts["archived"] = await _erase_in_nats(request, account_id, address, ids)
    except (MirrorUnavailable, nats.errors.Error, TimeoutError) as e:
        log.warning("api.erasure_incomplete", account_id=account_id, error=str(e) or type(e).__name__)
        raise ApiError(503, "erasure_incomplete", "PostgreSQL's part is done, NATS could not be reached for "
                       "the rest (archive, tracking, suppression mirror); repeat the request to complete it",
                       {"Retry-After": "5"}) from None
    async with deps.sessions.begin() as s:
        row = await store.record(s, account_id, "erasure", address, requested_by(request), counts)
    log.info("api.data_erased", account_id=account_id, request_id=row.id, **counts)
    return row.id, counts


async def _erase_in_nats(request: Request, account_id: str, address: str, ids: list[str]) -> tuple[int, int]:
    """TRACKING entries first (they are found through the archive), then the archive entries."""
    deps = _deps(request)
    alias = store.pseudonym(account_id, address)
    kv = await deps.js.key_value(TRACKING)
    tracked = archived = 0
    seen: set[str] = set()
    for message_id in ids:
        for key in {message_id, await archive.stored_id(deps.js, message_id) or message_id} - seen:
            seen.add(key)
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value is None:
                continue
            found = tracking.TrackedMessage.from_bytes(entry.value)
            if found.account_id != account_id or not any(r.lower() == address for r in found.recipients):
                continue
            rewritten = tracking.TrackedMessage(
                account_id=found.account_id, links=found.links,
                recipients=[alias if r.lower() == address else r for r in found.recipients],
                message_ids={(alias if r.lower() == address else r): mid
                             for r, mid in found.message_ids.items()},
                tags=found.tags, metadata=found.metadata)
            await kv.put(key, rewritten.to_bytes())
            tracked += 1
        loaded = await archive.load(deps.js, message_id)
        if loaded is not None and loaded.account_id == account_id:
            archived += await archive.erase_recipient(deps.js, deps.bodies, message_id, address)
    return tracked, archived


def datarequest_router() -> APIRouter:
    router = APIRouter(tags=["data requests"])

    @router.get("/v1/data-requests", response_model=DataRequestList, responses=responses(401, 422),
                summary="The account's data requests (audit records), newest first",
                description="Each export and erasure: when, which API key asked, what was exported or "
                            "erased, and the address's pseudonym (never the address).")
    async def list_(request: Request, account_id: Account,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DataRequestList:
        async with _deps(request).sessions() as s:
            rows = await store.listing(s, account_id, limit)
        return DataRequestList(data_requests=[DataRequestOut.of(r) for r in rows])

    @router.get("/v1/data-requests/{address}", response_model=DataExport,
                responses=responses(401, 422, 503),
                summary="Everything the account holds about one address",
                description="Messages and their recipient rows, events (opens and clicks with IP and user "
                            "agent), suppressions and archived copies, oldest first; only this account's. "
                            "Bounded: see `limits` and `truncated`. Recorded as an audit record.")
    async def export(request: Request, account_id: Account, address: AddressPath) -> DataExport:
        wanted = subject_address(address)
        found, copies, cut = await build_export(request, account_id, wanted)
        async with _deps(request).sessions.begin() as s:
            row = await store.record(s, account_id, "export", wanted, requested_by(request),
                                     _export_counts(found, copies))
        return DataExport(request_id=row.id, address=wanted, generated_at=datetime.now(UTC),
                          messages=found.messages, events=found.events, suppressions=found.suppressions,
                          archived=copies, limits=dict(LIMITS),
                          truncated={**found.truncated, "archived": cut})

    @router.delete("/v1/data-requests/{address}", response_model=ErasureOut,
                   responses=responses(401, 422, 503),
                   summary="Erase one address's data",
                   description="Events and recipient rows are pseudonymised and scrubbed, archived copies "
                               "deleted, a suppression kept as a hash (the address stays suppressed). "
                               "Idempotent: repeating it erases nothing more (all counts 0). A 503 means "
                               "NATS was unreachable: repeat the request to complete it.")
    async def erase_(request: Request, account_id: Account, address: AddressPath) -> ErasureOut:
        wanted = subject_address(address)
        request_id, counts = await erase(request, account_id, wanted)
        return ErasureOut(request_id=request_id, subject=store.pseudonym(account_id, wanted), erased=counts)

    # --- SMTPeter's two-step export -------------------------------------------------------------------

    @router.post("/v1/datarequest", tags=["smtpeter"], responses=responses(401, 422),
                 summary="SMTPeter: request the data of an address",
                 description="`email` as a query parameter, form field or JSON member. Answers "
                             "`{\"id\": …}`, the id to GET /v1/datarequest/{id} with within 7 days. "
                             "`monitor` / `report` (SMTPeter's callback) is not supported: 422.",
                 openapi_extra={"requestBody": {"required": False, "content": {
                     "application/json": {"schema": {"type": "object", "properties": {
                         "email": {"type": "string"}}}},
                     "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
                         "email": {"type": "string"}}}}}}})
    async def smtpeter_create(request: Request, account_id: Account) -> dict[str, str]:
        fields = await _smtpeter_fields(request)
        return {"id": await _smtpeter_record(request, account_id, fields.get("email"))}

    @router.post("/v1/datarequest/{email}", tags=["smtpeter"], responses=responses(401, 422),
                 summary="SMTPeter: request the data of an address (address in the path)")
    async def smtpeter_create_path(request: Request, account_id: Account,
                                   email: AddressPath) -> dict[str, str]:
        await _smtpeter_fields(request)
        return {"id": await _smtpeter_record(request, account_id, email)}

    @router.get("/v1/datarequest/{request_id}/status", tags=["smtpeter"], responses=responses(401, 404),
                summary="SMTPeter: the status of a data request",
                description="Always `finished` for a request that can still be read: the data is "
                            "assembled when it is read.")
    async def smtpeter_status(request: Request, account_id: Account,
                              request_id: Annotated[str, Path(max_length=40)]) -> dict[str, str]:
        await _smtpeter_request(request, account_id, request_id)
        return {"id": request_id, "status": "finished"}

    @router.get("/v1/datarequest/{request_id}", tags=["smtpeter"], responses=responses(401, 404, 503),
                summary="SMTPeter: the data of a data request",
                description="`{\"info\": {\"type\": \"email\", \"id\": <address>}, \"data\": [messages, "
                            "events, suppressions, archived copies]}` (each an array, shaped as in GET "
                            "/v1/data-requests/{address}); `Postwire-Truncated: true` when a limit cut "
                            "a section short.")
    async def smtpeter_data(request: Request, account_id: Account,
                            request_id: Annotated[str, Path(max_length=40)]) -> JSONResponse:
        row = await _smtpeter_request(request, account_id, request_id)
        assert row.address is not None
        found, copies, cut = await build_export(request, account_id, row.address)
        data = [found.messages, found.events, found.suppressions, [c.model_dump() for c in copies]]
        headers = {"Postwire-Truncated": "true"} if cut or any(found.truncated.values()) else {}
        return JSONResponse({"info": {"type": "email", "id": row.address}, "data": data}, headers=headers)

    return router


async def _smtpeter_fields(request: Request) -> dict[str, str]:
    """``email`` (and a refused ``monitor``/``report``) from the query, a form or a JSON body."""
    fields: dict[str, str] = dict(request.query_params)
    fields.pop("access_token", None)
    body = await request.body()
    if body.strip():
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                parsed = json.loads(body)
                if not isinstance(parsed, dict):
                    raise ValueError("not an object")
                fields.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()})
            elif ctype == "multipart/form-data":
                fields.update(multipart_pairs(body, request.headers["content-type"]))
            else:
                fields.update(urlencoded_pairs(body))
        except (ValueError, FormError):
            raise InvalidInput(("body",), "the body must be a JSON object or a form",
                               "invalid_body") from None
    for name in ("monitor", "report"):
        if fields.get(name):
            raise InvalidInput(("body", name), f"{name!r} (reporting back when the data is ready) is not "
                               "supported: the data is ready at once, GET /v1/datarequest/{id}",
                               "unsupported")
    return fields


async def _smtpeter_record(request: Request, account_id: str, email: str | None) -> str:
    if not email:
        raise InvalidInput(("body", "email"), "the address to export is required", "missing")
    wanted = subject_address(email, ("body", "email"))
    async with _deps(request).sessions.begin() as s:
        await store.forget_exports(s, account_id, datetime.now(UTC) - EXPORT_TTL)
        row = await store.record(s, account_id, "export", wanted, requested_by(request), {},
                                 keep_address=True)
    return row.id


async def _smtpeter_request(request: Request, account_id: str, request_id: str) -> DataRequest:
    async with _deps(request).sessions() as s:
        row = await store.get(s, account_id, request_id)
    if (row is None or row.kind != "export" or row.address is None
            or row.created_at < datetime.now(UTC) - EXPORT_TTL):
        raise ApiError(404, "not_found", "no data request with this id in this account (unknown, older than "
                       "7 days, or its address has been erased since)")
    return row


__all__ = ["datarequest_router"]
