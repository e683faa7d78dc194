"""/v1/webhooks: endpoints that receive signed event POSTs, their recent deliveries and their dead letters
(docs/webhooks.md).

Scoped to the caller's account: another account's webhook answers 404, like a missing one. The secret
is shown once, in the 201 of the creation. URLs pass the SSRF policy here (https, public addresses) and
again before every delivery, in the notifier.

A test event (``POST /v1/webhooks/{id}/test``) is queued on the endpoint's own subject of WEBHOOKS, as
the notifier's fan-out queues a real event's delivery: the notifier then signs it, checks the URL, POSTs
and retries it exactly as it does every delivery, so a test that arrives proves the real path works.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import nats.errors
import structlog
from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from postwire.api_gateway.auth import Account
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError, InvalidInput, responses
from postwire.core.events import EVENT_TYPES
from postwire.core.ids import new_id
from postwire.db import webhooks as store
from postwire.db.models import Webhook, WebhookAttempt, WebhookDeadLetter
from postwire.db.webhooks import Delivery, UnsafeUrl, UrlPolicy

log = structlog.get_logger(__name__)

WebhookId = Annotated[str, Path(max_length=32)]
SUBSCRIBABLE = EVENT_TYPES
REPLAY_MAX = 1000
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=store.MAX_URL, examples=["https://example.com/postwire/events"])
    event_types: list[str] = Field(default_factory=list, max_length=len(SUBSCRIBABLE),
                                   description="Types to receive; empty or omitted: all of them.")


class WebhookOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signs every POST (Postwire-Signature). Shown only now: store it.")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeadLetterOut(BaseModel):
    id: str
    event_id: str
    payload: dict[str, Any] = Field(description="The body that was to be POSTed.")
    last_error: str
    attempts: int
    created_at: datetime = Field(description="When the event was first queued for this endpoint.")
    parked_at: datetime


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetterOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    event_id: str
    event_type: str = Field(description="The delivered event's type (`test` for a test event).")
    attempt: int = Field(description="1 for a delivery's first POST, 2 for its first retry, ...")
    outcome: str = Field(description="`delivered` (a 2xx), `failed` (another status, a timeout, a "
                                     "refused connection), `refused` (the URL policy stopped it).")
    http_status: int | None = Field(description="The endpoint's status; null when it did not answer.")
    error: str
    duration_ms: int
    at: datetime


class AttemptList(BaseModel):
    deliveries: list[AttemptOut]


# printable ASCII: a NUL reached PostgreSQL and came back as a 503 (fuzzer finding)
DeadLetterId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[!-~]+$")]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[DeadLetterId] | None = Field(default=None, max_length=REPLAY_MAX,
                                           description=f"Dead letters to replay; omitted: all (up to "
                                                       f"{REPLAY_MAX} per call, oldest first).")


class ReplayResult(BaseModel):
    replayed: int


# the type of the event POST /v1/webhooks/{id}/test sends; never one of EVENT_TYPES, so never a real event
TEST_EVENT_TYPE = "test"


class QueuedTestEvent(BaseModel):
    event_id: str = Field(description="The test event's id: `event.id` in the POSTed body and the "
                                      "Postwire-Event-Id header.")
    webhook_id: str


def make_test_event(event_id: str, at: datetime) -> dict[str, Any]:
    """A test event in the shape of every event's common fields; no message, no recipient."""
    return {"id": event_id, "type": TEST_EVENT_TYPE,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "message_id": "", "recipient": "", "tags": [], "metadata": {}}


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _out(row: Webhook) -> WebhookOut:
    return WebhookOut(id=row.id, url=row.url, event_types=list(row.event_types or []), active=row.active,
                      created_at=row.created_at)


def _dead_out(row: WebhookDeadLetter) -> DeadLetterOut:
    return DeadLetterOut(id=row.id, event_id=row.event_id, payload=row.payload, last_error=row.last_error,
                         attempts=row.attempts, created_at=row.created_at, parked_at=row.parked_at)


def _attempt_out(row: WebhookAttempt) -> AttemptOut:
    return AttemptOut(event_id=row.event_id, event_type=row.event_type, attempt=row.attempt,
                      outcome=row.outcome, http_status=row.http_status, error=row.error,
                      duration_ms=row.duration_ms, at=row.at)


def _not_found(webhook_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no webhook {webhook_id!r} in this account")


async def _check(payload: WebhookCreate, policy: UrlPolicy) -> None:
    unknown = sorted(set(payload.event_types) - set(SUBSCRIBABLE))
    if unknown:
        raise InvalidInput(("body", "event_types"), f"unknown event type(s) {', '.join(unknown)}; one of "
                           f"{', '.join(SUBSCRIBABLE)}", "invalid_event_type")
    if _CONTROL.search(payload.url.strip()):  # PostgreSQL cannot even store a NUL (fuzzer finding)
        raise InvalidInput(("body", "url"), "the URL must not contain spaces or control characters",
                           "unsafe_url")
    try:
        await store.check_target(payload.url, policy)
    except UnsafeUrl as e:
        raise InvalidInput(("body", "url"), str(e), "unsafe_url") from None
    except ValueError:  # urlsplit: "https://[::1" and other malformed hosts (was a 500; fuzzer finding)
        raise InvalidInput(("body", "url"), "not a valid URL", "unsafe_url") from None


def _encode_dead_cursor(row: WebhookDeadLetter) -> str:
    raw = f"{row.parked_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _dead_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """(parked_at, id) of the last dead letter of the previous page."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        at, dead_id = raw.split("|")
        parked_at = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(("query", "cursor"), "invalid cursor; pass next_cursor as returned",
                           "invalid_cursor") from None
    if parked_at.tzinfo is None:
        raise InvalidInput(("query", "cursor"), "invalid cursor", "invalid_cursor")
    return parked_at, dead_id


def webhooks_router() -> APIRouter:
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

    @router.post("", status_code=201, response_model=WebhookCreated, responses=responses(401, 422, 503),
                 summary="Register an endpoint",
                 description="The URL must be https and resolve to public addresses only (operators can "
                             "relax both). The answer carries the signing secret, once.")
    async def create(payload: WebhookCreate, request: Request, account_id: Account) -> WebhookCreated:
        deps = _deps(request)
        settings = deps.settings
        await _check(payload, UrlPolicy(settings.webhook_allow_http, settings.webhook_allow_private))
        async with deps.sessions.begin() as s:
            row = await store.create_webhook(s, account_id, payload.url, payload.event_types)
        log.info("api.webhook_added", account_id=account_id, webhook_id=row.id)
        return WebhookCreated(**_out(row).model_dump(), secret=row.secret)

    @router.get("", response_model=WebhookList, responses=responses(401, 503),
                summary="The account's endpoints")
    async def list_(request: Request, account_id: Account) -> WebhookList:
        async with _deps(request).sessions() as s:
            rows = await store.list_webhooks(s, account_id)
        return WebhookList(webhooks=[_out(r) for r in rows])

    @router.get("/{webhook_id}", response_model=WebhookOut, responses=responses(401, 404, 503),
                summary="One endpoint")
    async def get(request: Request, account_id: Account, webhook_id: WebhookId) -> WebhookOut:
        async with _deps(request).sessions() as s:
            row = await store.get_webhook(s, account_id, webhook_id)
        if row is None:
            raise _not_found(webhook_id)
        return _out(row)

    @router.delete("/{webhook_id}", status_code=204, responses=responses(401, 404, 503),
                   summary="Remove an endpoint",
                   description="Its queued deliveries and dead letters are dropped (within "
                               "POSTWIRE_WEBHOOK_RECONCILE_S).")
    async def remove(request: Request, account_id: Account, webhook_id: WebhookId) -> Response:
        async with _deps(request).sessions.begin() as s:
            deleted = await store.delete_webhook(s, account_id, webhook_id)
        if not deleted:
            raise _not_found(webhook_id)
        log.info("api.webhook_deleted", account_id=account_id, webhook_id=webhook_id)
        return Response(status_code=204)

    @router.get("/{webhook_id}/deliveries", response_model=AttemptList,
                responses=responses(401, 404, 422, 503),
                summary="The endpoint's recent POSTs, newest first",
                description="Every attempt of the last POSTWIRE_WEBHOOK_LOG_DAYS (7 by default): outcome, "
                            "the endpoint's HTTP status or the error, and how long it took. Written by the "
                            "notifier in batches, so an attempt shows about a second after it was made.")
    async def deliveries(request: Request, account_id: Account, webhook_id: WebhookId,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> AttemptList:
        return AttemptList(deliveries=[_attempt_out(r) for r in
                                       await recent_deliveries(request, account_id, webhook_id, limit)])

    @router.get("/{webhook_id}/dead-letters", response_model=DeadLetterList,
                responses=responses(401, 404, 422, 503),
                summary="Deliveries given up after the retry window, oldest first")
    async def dead_letters(request: Request, account_id: Account, webhook_id: WebhookId,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                           cursor: Annotated[str | None, Query(max_length=200)] = None) -> DeadLetterList:
        after = _dead_cursor(cursor)
        async with _deps(request).sessions() as s:
            if await store.get_webhook(s, account_id, webhook_id) is None:
                raise _not_found(webhook_id)
            rows = await store.list_dead_letters(s, account_id, webhook_id, limit, after)
        nxt = _encode_dead_cursor(rows[-1]) if len(rows) == limit else None
        return DeadLetterList(dead_letters=[_dead_out(r) for r in rows], next_cursor=nxt)

    @router.post("/{webhook_id}/dead-letters/replay", status_code=202, response_model=ReplayResult,
                 responses=responses(401, 404, 422, 503),
                 summary="Queue dead letters for delivery again",
                 description="Each gets a fresh retry window. Replayed letters leave the list; one that "
                             "fails for the whole window again is parked again.")
    async def replay(request: Request, account_id: Account, webhook_id: WebhookId,
                     payload: Annotated[ReplayRequest | None, Body()] = None) -> ReplayResult:
        return ReplayResult(replayed=await replay_dead_letters(request, account_id, webhook_id,
                                                               payload.ids if payload is not None else None))

    @router.post("/{webhook_id}/test", status_code=202, response_model=QueuedTestEvent,
                 responses=responses(401, 404, 503),
                 summary="Send a signed test event",
                 description="Queues one event of type `test` for this endpoint, whatever types it "
                             "subscribes to. It is signed, POSTed and retried like every delivery, within "
                             "seconds (up to POSTWIRE_WEBHOOK_RECONCILE_S for an endpoint created just "
                             "now).")
    async def send_test(request: Request, account_id: Account, webhook_id: WebhookId) -> QueuedTestEvent:
        return await send_test_event(request, account_id, webhook_id)

    return router


async def recent_deliveries(request: Request, account_id: str, webhook_id: str,
                            limit: int) -> list[WebhookAttempt]:
    """The endpoint's latest attempts (the API's list and the console's table); 404 for another
    account's endpoint, like a missing one."""
    async with _deps(request).sessions() as s:
        if await store.get_webhook(s, account_id, webhook_id) is None:
            raise _not_found(webhook_id)
        return list(await store.recent_attempts(s, account_id, webhook_id, limit))


async def replay_dead_letters(request: Request, account_id: str, webhook_id: str,
                              ids: list[str] | None) -> int:
    """Queue the endpoint's dead letters (``ids``, or all up to REPLAY_MAX) again (the API's replay and
    the console's button); how many were queued."""
    deps = _deps(request)
    js = deps.nc.jetstream()
    async with deps.sessions.begin() as s:
        if await store.get_webhook(s, account_id, webhook_id) is None:
            raise _not_found(webhook_id)
        rows = await store.take_dead_letters(s, account_id, webhook_id, ids, REPLAY_MAX)
        now = time.time()
        try:
            for r in rows:
                d = Delivery(webhook_id=webhook_id, account_id=account_id, event_id=r.event_id,
                             body=store.body_bytes(r.payload), first_at=now)
                await store.enqueue(js, d, f"{r.id}:replay", timeout=deps.settings.publish_timeout_s)
        except (nats.errors.Error, TimeoutError) as e:  # the rows stay parked (rollback)
            raise ApiError(503, "queue_unavailable", "the queue is unavailable; nothing was replayed "
                           "(some may already be queued again), retry later",
                           headers={"Retry-After": "5"}) from e
        await store.forget_dead_letters(s, [r.id for r in rows])
    log.info("api.webhook_replay", account_id=account_id, webhook_id=webhook_id, replayed=len(rows))
    return len(rows)


async def send_test_event(request: Request, account_id: str, webhook_id: str) -> QueuedTestEvent:
    """Queue one signed ``test`` event for the endpoint (the API's POST …/test and the console's
    button)."""
    deps = _deps(request)
    async with deps.sessions() as s:
        row = await store.get_webhook(s, account_id, webhook_id)
    if row is None:
        raise _not_found(webhook_id)
    event_id = new_id("test_")
    body = store.body_bytes(store.payload(row.id, make_test_event(event_id, datetime.now(UTC))))
    d = Delivery(webhook_id=row.id, account_id=account_id, event_id=event_id, body=body,
                 first_at=time.time())
    try:
        await store.enqueue(deps.nc.jetstream(), d, f"{event_id}:{row.id}",
                            timeout=deps.settings.publish_timeout_s)
    except (nats.errors.Error, TimeoutError) as e:
        raise ApiError(503, "queue_unavailable", "the queue is unavailable; no test event was sent, "
                       "retry later", headers={"Retry-After": "5"}) from e
    log.info("api.webhook_test", account_id=account_id, webhook_id=row.id, event_id=event_id)
    return QueuedTestEvent(event_id=event_id, webhook_id=row.id)
