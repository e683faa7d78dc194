"""The tracking endpoints: /t/c/{token} (click redirect) and /t/o/{token} (open pixel). docs/tracking.md.

No authentication: the recipient's mail client calls them. The token is the authority (signed, opaque,
postwire.core.tracking), so a forged or tampered one is a 404 and never a redirect to somewhere the
sender did not link to. Each hit publishes an ``opened`` / ``clicked`` event (webhooks get it); the first
per recipient (per link, for clicks) is flagged ``unique`` by creating a marker key in the TRACKING
bucket, which is atomic across replicas. When NATS cannot take the event the recipient still gets their
page or pixel: losing one open beats breaking a link in someone's inbox (counted in a metric).
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from typing import Annotated

import nats.errors
import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response
from nats.js.errors import Error as JetStreamError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError
from postwire.core import tracking
from postwire.core.events import make_event, publish_event
from postwire.core.ids import new_id
from postwire.core.settings import PostwireSettings, verp_secret_bytes
from postwire.core.topology import TRACKING as TRACKING_BUCKET

log = structlog.get_logger(__name__)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # 1x1 transparent GIF
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}
# any string: a malformed token is a 404 like a forged one, not a 422 that tells a prober what we expect
Token = Annotated[str, Path(description="The opaque token of the link or pixel")]
HITS = Counter("postwire_api_tracking_requests_total",
               "Tracking hits by kind (click, pixel) and result: recorded, bad_token (forged, tampered or "
               "malformed), unknown (expired or no such link), event_lost (NATS did not take the event; "
               "the redirect or pixel was still served).", ["kind", "result"])
_CACHE_TTL_S = 300.0
_CACHE_SIZE = 10_000
_UA_MAX = 512


class TrackedMessages:
    """TRACKING bucket entries by group id, with a small cache (a campaign's clicks hit the same few)."""

    def __init__(self) -> None:
        self._kv: KeyValue | None = None
        self._cache: OrderedDict[str, tuple[float, tracking.TrackedMessage]] = OrderedDict()

    async def bucket(self, deps: Deps) -> KeyValue:
        if self._kv is None:
            self._kv = await deps.nc.jetstream().key_value(TRACKING_BUCKET)
        return self._kv

    async def get(self, deps: Deps, group_id: str) -> tracking.TrackedMessage | None:
        now = time.monotonic()
        hit = self._cache.get(group_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            entry = await (await self.bucket(deps)).get(group_id)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        found = tracking.TrackedMessage.from_bytes(entry.value)
        self._cache[group_id] = (now + _CACHE_TTL_S, found)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

    async def first(self, deps: Deps, token: tracking.Token) -> bool:
        """True for the first open of the recipient (first click of the link): the marker is new."""
        try:
            await (await self.bucket(deps)).create(tracking.unique_key(token), b"1")
        except KeyWrongLastSequenceError:
            return False
        return True


def tracking_router(settings: PostwireSettings) -> APIRouter:
    router = APIRouter(prefix="/t", tags=["tracking"])
    key = tracking.tracking_key(verp_secret_bytes(settings))
    messages = TrackedMessages()

    async def resolve(request: Request, token: str, want_open: bool,
                      ) -> tuple[tracking.Token, tracking.TrackedMessage, str]:
        try:
            t = tracking.read_token(key, token)
        except tracking.BadToken:
            HITS.labels("pixel" if want_open else "click", "bad_token").inc()
            raise ApiError(404, "not_found", "unknown link") from None
        deps: Deps = request.app.state.deps
        try:
            entry = await messages.get(deps, t.group_id)
        except (nats.errors.Error, JetStreamError, TimeoutError, OSError) as e:
            raise ApiError(503, "unavailable", "try again in a moment", headers={"Retry-After": "5"}) from e
        if (entry is None or t.is_open != want_open or t.recipient_index >= len(entry.recipients)
                or (not t.is_open and t.link_index >= len(entry.links))):
            HITS.labels("pixel" if want_open else "click", "unknown").inc()
            raise ApiError(404, "not_found", "unknown link")
        return t, entry, entry.recipients[t.recipient_index]

    async def record(request: Request, t: tracking.Token, entry: tracking.TrackedMessage, recipient: str,
                     url: str = "") -> None:
        deps: Deps = request.app.state.deps
        kind = "opened" if t.is_open else "clicked"
        try:
            unique = await messages.first(deps, t)
            ev = make_event(kind, account_id=entry.account_id,
                            message_id=entry.message_id(t.group_id, recipient), recipient=recipient,
                            tags=entry.tags, metadata=entry.metadata, url=url,
                            link_index=0 if t.is_open else t.link_index, unique=unique,
                            client_ip=request.client.host if request.client else "",
                            user_agent=request.headers.get("user-agent", "")[:_UA_MAX])
            ev.event_id = f"{ev.message_id}.{kind}.{new_id()}.{recipient.lower()}"  # one event per hit
            await publish_event(deps.js, ev)
        except (nats.errors.Error, JetStreamError, TimeoutError, OSError) as e:
            HITS.labels("pixel" if t.is_open else "click", "event_lost").inc()
            log.warning("tracking.event_not_recorded", kind=kind, error=str(e) or type(e).__name__)
            return
        HITS.labels("pixel" if t.is_open else "click", "recorded").inc()

    @router.get("/c/{token}", status_code=302, response_class=RedirectResponse,
                responses={302: {"description": "To the original link"},
                           404: {"description": "Unknown, forged or expired token"}},
                summary="Click tracking redirect")
    async def click(request: Request, token: Token) -> RedirectResponse:
        t, entry, recipient = await resolve(request, token, want_open=False)
        url = entry.links[t.link_index]
        await record(request, t, entry, recipient, url)
        return RedirectResponse(url, status_code=302, headers=NO_STORE)

    @router.get("/o/{token}", response_class=Response,
                responses={200: {"content": {"image/gif": {}}, "description": "A 1x1 transparent GIF"},
                           404: {"description": "Unknown, forged or expired token"}},
                summary="Open tracking pixel")
    async def pixel(request: Request, token: Token) -> Response:
        t, entry, recipient = await resolve(request, token, want_open=True)
        await record(request, t, entry, recipient)
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)

    return router
