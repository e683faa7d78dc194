"""/v1/account/bulk: whether the account's bulk lane is paused (automatically, when its 24-hour complaint
rate reached its threshold), and resuming it, which only a person does (docs/delivery.md, "Pausing bulk
mail on complaints"). Resuming publishes a ``bulk_resumed`` event (webhooks fire) in the same
transaction that clears the pause: when NATS cannot take the event, nothing changes and the answer is 503.
"""

from __future__ import annotations

from datetime import datetime

import nats.errors
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from postwire.api_gateway.auth import Account
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError, responses
from postwire.core.events import publish_event
from postwire.db import bulk_pause
from postwire.v1 import envelope_pb2


class BulkState(BaseModel):
    paused: bool = Field(description="Whether the account's bulk lane is paused (its transactional mail "
                                     "flows either way).")
    paused_at: datetime | None = Field(description="When it was paused; null while bulk mail flows.")
    pause_at_complaint_rate: float | None = Field(
        description="The 24-hour complaint rate (0.003 = 0.3 %) that pauses it; null: never.")


class Resumed(BulkState):
    resumed: bool = Field(description="True when it was paused and is now resumed; false when it was not "
                                      "paused (nothing changed).")


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def account_router() -> APIRouter:
    router = APIRouter(prefix="/v1/account", tags=["account"])

    @router.get("/bulk", response_model=BulkState, responses=responses(401, 503),
                summary="Whether the account's bulk mail is paused")
    async def bulk_state(request: Request, account_id: Account) -> BulkState:
        async with _deps(request).sessions() as s:
            threshold, paused_at = await bulk_pause.pause_state(s, account_id)
        return BulkState(paused=paused_at is not None, paused_at=paused_at,
                         pause_at_complaint_rate=float(threshold) if threshold is not None else None)

    @router.post("/bulk/resume", response_model=Resumed, responses=responses(401, 503),
                 summary="Resume the account's bulk mail after an automatic pause",
                 description="Clears the pause and publishes a `bulk_resumed` event; the held bulk mail is "
                             "routed again within a minute. Idempotent: resuming a lane that is not paused "
                             "changes nothing (`resumed` false). The pause comes back automatically if the "
                             "24-hour complaint rate is still at the threshold at the next check.")
    async def resume_bulk(request: Request, account_id: Account) -> Resumed:
        deps = _deps(request)

        async def publish(ev: envelope_pb2.Event) -> None:
            await publish_event(deps.js, ev, timeout=deps.settings.publish_timeout_s)

        try:
            async with deps.sessions() as s:
                was = await bulk_pause.resume(s, account_id, "resumed through the API", publish)
        except (nats.errors.Error, TimeoutError) as e:
            raise ApiError(503, "queue_unavailable", "the event could not be published; try again") from e
        async with deps.sessions() as s:
            threshold, paused_at = await bulk_pause.pause_state(s, account_id)
        return Resumed(resumed=was is not None, paused=paused_at is not None, paused_at=paused_at,
                       pause_at_complaint_rate=float(threshold) if threshold is not None else None)

    return router
