"""/v1/events, /v1/bounces, /v1/stats and /v1/stats/{tag}: what happened to the account's mail
(docs/events.md). The SMTPeter-compatible GET /v1/events/{kind}/{value} is in routes_smtpeter.

Every query is scoped to the caller's account. Listings page in recording order with an opaque cursor
that returns each event exactly once even while new events keep being recorded (see
postwire.db.events_query for why that is not the order of ``at``).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from postwire.api_gateway.auth import Account
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import InvalidInput, responses
from postwire.api_gateway.schemas import datetime_in_range
from postwire.core.events import EVENT_TYPES
from postwire.db.events_query import (
    BOUNCE_TYPES,
    EventFilter,
    EventPage,
    InvalidCursor,
    daily_counts,
    default_range,
    list_events,
    rates,
    totals,
)

KNOWN_TYPES = EVENT_TYPES
MAX_STATS_DAYS = 366
CSV_COLUMNS = ("id", "type", "at", "message_id", "recipient", "reason", "hardbounce", "smtp_code",
               "enhanced_status", "response", "mx_host", "remote_mta", "feedback_type", "tags")

TypeParam = Annotated[list[str] | None, Query(
    description="Event type; repeat it or separate with commas (`type=bounced,failed`).")]
Recipient = Annotated[str | None, Query(max_length=320)]
MessageId = Annotated[str | None, Query(max_length=40)]
TagParam = Annotated[str | None, Query(min_length=1, max_length=128)]
DomainParam = Annotated[str | None, Query(
    min_length=1, max_length=253,
    description="Only messages sent from this domain (any case): the part of their sender (`from`) after "
                "the last `@`. Exactly that domain, not its subdomains.")]
Start = Annotated[datetime | None, Query(description="ISO 8601, inclusive; UTC when no offset is given.")]
End = Annotated[datetime | None, Query(description="ISO 8601, exclusive; UTC when no offset is given.")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` or `resume_cursor` of "
                                                                 "an earlier page.")]


class EventList(BaseModel):
    events: list[dict[str, Any]] = Field(description="Events in recording order (see docs/events.md).")
    next_cursor: str | None = Field(description="Set when this page is full: pass it to get the next one.")
    resume_cursor: str | None = Field(description="Always set once anything was returned: pass it later "
                                                  "to get only events recorded since (polling).")


class StatsTotals(BaseModel):
    """Totals over the whole range (docs/events.md, "Totals")."""

    messages: int = Field(description="Messages accepted, counted per recipient (`accepted` events: one "
                                      "per id that POST /v1/send returns).")
    deliveries: int = Field(description="`delivered` events.")
    bounces: int = Field(description="`failed` + `bounced` events: recipients refused at delivery, expired "
                                     "or bounced afterwards (suppressed recipients are not counted).")
    opens: int = Field(description="Every `opened` event (each fetch of the pixel).")
    unique_opens: int = Field(description="`opened` events flagged unique: the recipient's first open.")
    clicks: int = Field(description="Every `clicked` event.")
    unique_clicks: int = Field(description="`clicked` events flagged unique: a recipient's first click "
                                           "on a link.")


class WindowRates(BaseModel):
    """Delivery outcomes and rates of one window ending now (docs/events.md, "Rates")."""

    delivered: int = Field(description="`delivered` events.")
    attempted: int = Field(description="`delivered` + `failed` events: recipients whose delivery ended.")
    bounced: int = Field(description="`failed` + `bounced` events (the totals' `bounces`).")
    complained: int = Field(description="`complained` events (ARF spam reports).")
    bounce_rate: float | None = Field(description="bounced / attempted; null when nothing was attempted.")
    complaint_rate: float | None = Field(description="complained / delivered, as Gmail and Yahoo count "
                                                     "it; null when nothing was delivered.")


class StatsList(BaseModel):
    stats: list[dict[str, Any]] = Field(description="One entry per UTC day: {\"day\", <type>: count, …}.")
    totals: StatsTotals
    rates: dict[str, WindowRates] = Field(
        default_factory=dict, description="Bounce and complaint rates over the last `1h`, `24h` and `7d` "
                                          "up to now, whatever the range; of the `domain` when given, "
                                          "of all the account's mail otherwise (not only the `tag`'s).")
    start: datetime = Field(description="The range counted: from (inclusive) …")
    end: datetime = Field(description="… to (exclusive).")
    tag: str | None = Field(default=None, description="Only messages with this tag were counted.")
    domain: str | None = Field(default=None, description="Only messages sent from this domain were counted.")


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _utc(value: datetime | None, name: str) -> datetime | None:
    """UTC, and within the range every API time must be in (422 ``datetime_out_of_range`` otherwise)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        datetime_in_range(value)
    except ValueError as e:
        raise InvalidInput(("query", name), str(e), "datetime_out_of_range") from None
    return value.astimezone(UTC)


def _types(values: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
    types = [t.strip() for v in values or [] for t in v.split(",") if t.strip()]
    unknown = sorted(set(types) - set(allowed))
    if unknown:
        raise InvalidInput(("query", "type"), f"unknown event type(s) {', '.join(unknown)}; one of "
                           f"{', '.join(allowed)}", "invalid_event_type")
    return types


def _filter(types: list[str], recipient: str | None, message_id: str | None, tag: str | None,
            start: datetime | None, end: datetime | None, bounces_only: bool = False) -> EventFilter:
    start, end = _utc(start, "start"), _utc(end, "end")
    if start is not None and end is not None and start >= end:
        raise InvalidInput(("query", "end"), "end must be after start", "invalid_range")
    return EventFilter(types=types, recipient=recipient, message_id=message_id, tag=tag, start=start,
                       end=end, bounces_only=bounces_only)


async def _page(request: Request, account_id: str, f: EventFilter, limit: int,
                cursor: str | None) -> EventPage:
    try:
        async with _deps(request).sessions() as s:
            return await list_events(s, account_id, f, limit, cursor)
    except InvalidCursor as e:
        raise InvalidInput(("query", "cursor"), str(e), "invalid_cursor") from None


async def _stats(request: Request, account_id: str, start: datetime | None, end: datetime | None,
                 tag: str | None, domain: str | None) -> StatsList:
    lo, hi = default_range(_utc(start, "start"), _utc(end, "end"))
    if lo >= hi:
        raise InvalidInput(("query", "end"), "end must be after start", "invalid_range")
    if hi - lo > timedelta(days=MAX_STATS_DAYS):
        raise InvalidInput(("query", "start"), f"at most {MAX_STATS_DAYS} days per request", "range_too_long")
    async with _deps(request).sessions() as s:
        days = await daily_counts(s, account_id, lo, hi, tag, domain)
        sums = await totals(s, account_id, lo, hi, tag, domain)
        windows = await rates(s, account_id, domain)
    return StatsList(stats=days, totals=StatsTotals(**sums),
                     rates={name: WindowRates(**r.json()) for name, r in windows.items()},
                     start=lo, end=hi, tag=tag, domain=domain)


def _csv(page: EventPage) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for ev in page.events:
        row = {**ev, "tags": " ".join(ev.get("tags") or [])}
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    headers = {k: v for k, v in (("Postwire-Next-Cursor", page.next_cursor),
                                 ("Postwire-Resume-Cursor", page.resume_cursor)) if v}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def events_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"])

    @router.get("/events", response_model=EventList, responses=responses(401, 422, 503),
                summary="The account's events, filtered, in recording order",
                description="Cursor pagination returns every event exactly once, also while new events "
                            "arrive. Each event has `id`, `type`, `at`, `message_id`, `recipient`, `tags`, "
                            "`metadata` and its type's fields (docs/events.md).")
    async def events(request: Request, account_id: Account, type: TypeParam = None,
                     recipient: Recipient = None, message_id: MessageId = None, tag: TagParam = None,
                     start: Start = None, end: End = None, limit: Limit = 100,
                     cursor: Cursor = None) -> EventList:
        f = _filter(_types(type, KNOWN_TYPES), recipient, message_id, tag, start, end)
        page = await _page(request, account_id, f, limit, cursor)
        return EventList(events=page.events, next_cursor=page.next_cursor, resume_cursor=page.resume_cursor)

    @router.get("/bounces", response_model=EventList,
                responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                 "description": "JSON, or with `format=csv` one CSV page."},
                           **responses(401, 422, 503)},
                summary="Bounces, complaints and classified failures; JSON or CSV",
                description="`bounced` and `complained` events and `failed` events that carry a reason. "
                            "With `format=csv` the page is CSV and the cursors are in the "
                            "`Postwire-Next-Cursor` / `Postwire-Resume-Cursor` headers. Poll with "
                            "`resume_cursor` to download only what is new since the last run.")
    async def bounces(request: Request, account_id: Account, type: TypeParam = None,
                      recipient: Recipient = None, message_id: MessageId = None, tag: TagParam = None,
                      start: Start = None, end: End = None, limit: Limit = 100, cursor: Cursor = None,
                      format: Literal["json", "csv"] = "json") -> Any:
        f = _filter(_types(type, BOUNCE_TYPES), recipient, message_id, tag, start, end, bounces_only=True)
        page = await _page(request, account_id, f, limit, cursor)
        if format == "csv":
            return _csv(page)
        return EventList(events=page.events, next_cursor=page.next_cursor, resume_cursor=page.resume_cursor)

    @router.get("/stats", response_model=StatsList, responses=responses(401, 422, 503),
                summary="Event counts per UTC day and type, and totals",
                description="Default range: the last 30 UTC days including today. Every day of the range "
                            "is listed, with 0 for types that did not occur; `totals` sums the range up "
                            "(messages, deliveries, bounces, opens and clicks, all and unique). `tag` and "
                            "`domain` (the sending domain) count only the messages with that tag, sent "
                            "from that domain; both together, those with both.")
    async def stats(request: Request, account_id: Account, start: Start = None, end: End = None,
                    tag: TagParam = None, domain: DomainParam = None) -> StatsList:
        return await _stats(request, account_id, start, end, tag, domain)

    @router.get("/stats/{tag}", response_model=StatsList, responses=responses(401, 422, 503),
                summary="Event counts and totals of the messages with one tag",
                description="As GET /v1/stats?tag=… (and `domain`, the sending domain).")
    async def stats_for_tag(request: Request, account_id: Account,
                            tag: Annotated[str, Path(min_length=1, max_length=128)],
                            start: Start = None, end: End = None, domain: DomainParam = None) -> StatsList:
        return await _stats(request, account_id, start, end, tag, domain)

    return router
