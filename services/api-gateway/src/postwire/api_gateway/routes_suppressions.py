"""/v1/suppressions: the account's suppression list — list, add, remove, export (docs/suppressions.md).

Every route is scoped to the caller's account; another account's entry for the same address is
invisible and untouchable (404). Writes go to PostgreSQL first and then to the SUPPRESSIONS KV bucket
the router reads; if the KV half fails the answer is 503 and repeating the request completes it (both
halves are idempotent). Listings use keyset pagination over (created_at, address) with an opaque cursor.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from postwire.api_gateway.auth import Account
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError, InvalidInput, responses
from postwire.api_gateway.schemas import datetime_in_range
from postwire.core.addresses import AddressError, normalize_address
from postwire.db import suppressions as store
from postwire.db.suppressions import (
    Cursor,
    Filters,
    InvalidCursor,
    MirrorUnavailable,
    SuppressionInfo,
    SuppressionMirror,
)

log = structlog.get_logger(__name__)

Address = Annotated[str, Path(max_length=320, description="The suppressed address (any case).")]
_REASON = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
CSV_FIELDS = ("address", "reason", "source", "created_at", "expires_at")


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=320, examples=["jane@example.com"])
    reason: str = Field(default="manual", examples=["manual", "unsubscribe", "complaint"],
                        description="Lower-case word: `manual` (default), `unsubscribe`, `complaint`, or a "
                                    "bounce reason such as `userunknown`.")
    expires_at: datetime | None = Field(default=None, description="When the entry stops blocking (UTC if "
                                                                   "no offset is given); never when omitted.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            return store.normalise_address(normalize_address(v))
        except AddressError as e:
            raise PydanticCustomError("invalid_address", str(e)) from None

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not _REASON.match(v):
            raise PydanticCustomError("invalid_reason", "reason must be a lower-case word (a-z, 0-9, _ "
                                      "or -), at most 64 characters")
        return v

    @field_validator("expires_at")
    @classmethod
    def _expires(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        v = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        if v <= datetime.now(UTC):
            raise PydanticCustomError("expired", "expires_at must be in the future")
        return datetime_in_range(v)  # year 9999 with a negative offset was a 503 (fuzzer finding)


class SuppressionOut(BaseModel):
    address: str
    reason: str = Field(description="Bounce reason (Sisimai vocabulary), or manual | complaint | "
                                    "unsubscribe.")
    source: str = Field(description="bounce | complaint | manual | soft_bounce_policy | unsubscribe")
    source_event_id: str | None = Field(default=None, description="The event that caused it, if any.")
    created_at: datetime
    expires_at: datetime | None = None
    scope: str = Field(default="all", description="What it blocks: all | bulk (an unsubscribe: bulk mail "
                       "only) | list:<id> (bulk mail of that list) (docs/unsubscribe.md).")

    @classmethod
    def of(cls, info: SuppressionInfo) -> SuppressionOut:
        return cls(address=info.address, reason=info.reason, source=info.source,
                   source_event_id=info.source_event_id, created_at=info.created_at,
                   expires_at=info.expires_at, scope=info.scope)


class SuppressionPage(BaseModel):
    suppressions: list[SuppressionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _mirror(request: Request) -> SuppressionMirror:
    """One mirror per app, bound to the bucket on first use."""
    mirror: SuppressionMirror | None = getattr(request.app.state, "suppression_mirror", None)
    if mirror is None:
        mirror = SuppressionMirror(_deps(request).nc.jetstream())
        request.app.state.suppression_mirror = mirror
    return mirror


def _kv_unavailable(e: MirrorUnavailable) -> ApiError:
    log.warning("api.suppressions_kv_unavailable", error=str(e))
    return ApiError(503, "suppressions_unavailable", "stored, but the dispatchers' copy could not be "
                    "updated; repeat the request", {"Retry-After": "5"})


def _filters(reason: str | None, source: str | None, q: str | None) -> Filters:
    return Filters(reason=reason or None, source=source or None, prefix=q or None)


def _cursor(token: str | None) -> Cursor | None:
    if not token:
        return None
    try:
        return Cursor.decode(token)
    except InvalidCursor as e:
        raise InvalidInput(("query", "cursor"), str(e), "invalid_cursor") from None


ReasonQ = Annotated[str | None, Query(max_length=64, description="Only this reason.")]
SourceQ = Annotated[str | None, Query(max_length=24, description="Only this source.")]
PrefixQ = Annotated[str | None, Query(max_length=320, description="Address prefix, e.g. `jane@` or `j`.")]


def suppressions_router() -> APIRouter:
    router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])

    @router.get("", response_model=SuppressionPage, responses=responses(401, 422, 503),
                summary="The account's suppressed addresses, oldest first",
                description="Expired entries are not listed. Paging from the start with `next_cursor` "
                            "returns every entry exactly once, also while new ones are added.")
    async def list_(request: Request, account_id: Account, reason: ReasonQ = None, source: SourceQ = None,
                    q: PrefixQ = None, cursor: Annotated[str | None, Query(max_length=1024)] = None,
                    limit: Annotated[int, Query(ge=1, le=store.MAX_PAGE)] = 100) -> SuppressionPage:
        after = _cursor(cursor)
        async with _deps(request).sessions() as s:
            rows = await store.list_page(s, account_id, _filters(reason, source, q), after, limit)
        last = rows[-1] if len(rows) == limit else None
        return SuppressionPage(suppressions=[SuppressionOut.of(r) for r in rows],
                               next_cursor=Cursor(last.created_at, last.address).encode() if last else None)

    @router.post("", status_code=201, response_model=SuppressionOut, responses=responses(401, 422, 503),
                 summary="Suppress an address",
                 description="Adding an address that is already suppressed updates its reason and expiry "
                             "and keeps its creation time. Takes effect for the next message routed.")
    async def create(payload: SuppressionCreate, request: Request, account_id: Account) -> SuppressionOut:
        return SuppressionOut.of(await add_manual(request, account_id, payload.address, payload.reason,
                                                  payload.expires_at))

    @router.get("/export.csv", responses={200: {"content": {"text/csv": {}}}, **responses(401, 503)},
                summary="Every suppressed address as CSV",
                description="Columns: address, reason, source, created_at, expires_at. Streamed, oldest "
                            "first; accepts the listing's filters.")
    async def export(request: Request, account_id: Account, reason: ReasonQ = None, source: SourceQ = None,
                     q: PrefixQ = None) -> StreamingResponse:
        rows = store.iter_all(_deps(request).sessions, account_id, _filters(reason, source, q))
        return StreamingResponse(_csv(rows), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'})

    @router.get("/{address}", response_model=SuppressionOut, responses=responses(401, 404, 503),
                summary="Whether one address is suppressed")
    async def get(request: Request, account_id: Account, address: Address) -> SuppressionOut:
        async with _deps(request).sessions() as s:
            info = await store.get(s, account_id, address)
        if info is None:
            raise ApiError(404, "not_found", "this address is not suppressed in this account")
        return SuppressionOut.of(info)

    @router.delete("/{address}", status_code=204, responses=responses(401, 404, 503),
                   summary="Remove an address from the list",
                   description="Mail to it is routed again within the dispatchers' cache time "
                               "(POSTWIRE_SUPPRESSION_CACHE_TTL_S, 10 s by default).")
    async def remove(request: Request, account_id: Account, address: Address) -> Response:
        if not await remove_manual(request, account_id, address):
            raise ApiError(404, "not_found", "this address is not suppressed in this account")
        return Response(status_code=204)

    return router


async def add_manual(request: Request, account_id: str, address: str, reason: str,
                     expires_at: datetime | None) -> SuppressionInfo:
    """Suppress ``address`` (the API's POST and the console's form): the table, then the KV mirror the
    routers read (503 when it cannot be written)."""
    async with _deps(request).sessions.begin() as s:
        info = await store.add(s, account_id, address, reason, "manual", expires_at=expires_at)
    try:
        await _mirror(request).put(info)
    except MirrorUnavailable as e:
        raise _kv_unavailable(e) from None
    log.info("api.suppression_added", account_id=account_id, reason=info.reason)
    return info


async def remove_manual(request: Request, account_id: str, address: str) -> bool:
    """Remove ``address`` from the list; False when it was not on it."""
    async with _deps(request).sessions.begin() as s:
        deleted = await store.remove(s, account_id, address)
    try:  # also when nothing was deleted: a retry after a 503 finishes the KV half
        await _mirror(request).delete(account_id, address)
    except MirrorUnavailable as e:
        raise _kv_unavailable(e) from None
    if deleted:
        log.info("api.suppression_removed", account_id=account_id)
    return deleted


async def _csv(pages: AsyncIterator[list[SuppressionInfo]]) -> AsyncIterator[str]:
    """Header, then one chunk per page of rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    yield buf.getvalue()
    async for rows in pages:
        buf.seek(0)
        buf.truncate()
        for r in rows:
            writer.writerow((r.address, r.reason, r.source, r.created_at.isoformat(),
                             r.expires_at.isoformat() if r.expires_at else ""))
        yield buf.getvalue()


async def add_manual_many(request: Request, account_id: str, addresses: list[str], reason: str) -> int:
    """Suppress many addresses at once (the console's CSV import): one transaction, then the KV mirror
    a hundred at a time; how many were added or renewed."""
    async with _deps(request).sessions.begin() as s:
        infos = [await store.add(s, account_id, address, reason, "manual") for address in addresses]
    mirror = _mirror(request)
    try:
        for start in range(0, len(infos), 100):
            await asyncio.gather(*(mirror.put(info) for info in infos[start:start + 100]))
    except MirrorUnavailable as e:
        raise _kv_unavailable(e) from None
    log.info("api.suppressions_imported", account_id=account_id, count=len(infos))
    return len(infos)
