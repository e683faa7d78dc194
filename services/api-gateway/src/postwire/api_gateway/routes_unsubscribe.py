"""One-click unsubscribe: /u/{token} (docs/unsubscribe.md, RFC 8058).

No authentication, no cookie, no CSRF token: the recipient's mail client (or mailbox provider) POSTs
``List-Unsubscribe=One-Click`` to the URL of the message's List-Unsubscribe, and that POST is the protocol.
The token is the authority (signed and sealed, postwire.core.unsubscribe): a forged or tampered one is a
404 page and never a suppression. A GET (someone opening the link in a browser) only shows a page whose
button makes that POST.

A POST, in order: an entry that already covers the address (the account's bulk mail, or the list) → 200,
nothing else, so a second POST records no second event; else the ``unsubscribed`` event to EVENTS (stable
id: a repeat is deduplicated), then the suppression (PostgreSQL, then the SUPPRESSIONS bucket the router
reads: source ``unsubscribe``, scope ``bulk`` or ``list:<id>``) → 200. When NATS or PostgreSQL cannot
take it the answer is 503 and repeating the POST completes it.
"""

from __future__ import annotations

import html
from typing import Annotated, Final

import nats.errors
import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from nats.js.errors import Error as JetStreamError
from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError

from postwire.api_gateway.console.pages import SECURITY_HEADERS
from postwire.api_gateway.deps import Deps
from postwire.core import tracking, unsubscribe
from postwire.core.events import make_event, publish_event
from postwire.core.settings import PostwireSettings, verp_secret_bytes
from postwire.db import suppressions as store
from postwire.db.suppressions import MirrorUnavailable, SuppressionMirror

log = structlog.get_logger(__name__)

# any string: a malformed token is a 404 like a forged one
Token = Annotated[str, Path(description="The opaque token of the message's List-Unsubscribe URL")]
REQUESTS = Counter("postwire_api_unsubscribe_requests_total",
                   "One-click unsubscribe requests by method (GET: the page, POST: the unsubscribe) and "
                   "result: page, unsubscribed, already (suppressed already), bad_token, unavailable.",
                   ["method", "result"])
REASON: Final = "unsubscribe"
_UA_MAX: Final = 512

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body><main><h1>{title}</h1>{body}</main></body></html>
"""


def _page(status: int, title: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status,
                        headers=SECURITY_HEADERS)


def _masked(address: str) -> str:
    """``j…@example.com``: enough for the recipient to recognise, little for whoever else sees the page."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}…@{domain}" if local else address


def _unknown(method: str) -> HTMLResponse:
    REQUESTS.labels(method, "bad_token").inc()
    return _page(404, "Unknown link", "<p>This unsubscribe link is not valid. Nothing was changed.</p>")


def _unavailable(method: str, error: Exception) -> HTMLResponse:
    REQUESTS.labels(method, "unavailable").inc()
    log.warning("unsubscribe.unavailable", error=str(error) or type(error).__name__)
    response = _page(503, "Try again in a moment",
                     "<p>We could not record this just now. Please try again in a moment.</p>")
    response.headers["Retry-After"] = "5"
    return response


def _done(address: str, what: unsubscribe.Unsubscribe) -> HTMLResponse:
    scope = f"the list {html.escape(what.list_id)}" if what.list_id else "this sender's mailings"
    return _page(200, "Unsubscribed", f"<p>{html.escape(_masked(address))} will no longer receive "
                 f"{scope}.</p>")


def _mirror(request: Request, deps: Deps) -> SuppressionMirror:
    """The app's suppression mirror (shared with /v1/suppressions), bound to the bucket on first use."""
    mirror: SuppressionMirror | None = getattr(request.app.state, "suppression_mirror", None)
    if mirror is None:
        mirror = SuppressionMirror(deps.nc.jetstream())
        request.app.state.suppression_mirror = mirror
    return mirror


def unsubscribe_router(settings: PostwireSettings) -> APIRouter:
    router = APIRouter(prefix="/u", tags=["unsubscribe"])
    key = unsubscribe.token_key(tracking.tracking_key(verp_secret_bytes(settings)))

    def read(token: str) -> unsubscribe.Unsubscribe | None:
        try:
            return unsubscribe.read_token(key, token)
        except unsubscribe.BadToken:
            return None

    @router.get("/{token}", response_class=HTMLResponse,
                responses={200: {"description": "A page with the unsubscribe button (a POST form)"},
                           404: {"description": "Unknown, forged or tampered token"}},
                summary="The unsubscribe page")
    async def page(token: Token) -> HTMLResponse:
        what = read(token)
        if what is None:
            return _unknown("GET")
        REQUESTS.labels("GET", "page").inc()
        scope = f"the list {html.escape(what.list_id)}" if what.list_id else "this sender's mailings"
        return _page(200, "Unsubscribe",
                     f"<p>Stop sending {scope} to {html.escape(_masked(what.recipient))}?</p>"
                     '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                     '<button type="submit">Unsubscribe</button></form>')

    @router.post("/{token}", response_class=HTMLResponse,
                 responses={200: {"description": "Unsubscribed (also when it already was)"},
                            404: {"description": "Unknown, forged or tampered token: nothing changed"},
                            503: {"description": "Not recorded; repeat the request"}},
                 summary="One-click unsubscribe (RFC 8058)",
                 description="The body is `List-Unsubscribe=One-Click` (RFC 8058), or empty (the page's "
                             "button may send either). No cookie, login or CSRF token.")
    async def confirm(request: Request, token: Token) -> HTMLResponse:
        what = read(token)
        if what is None:
            return _unknown("POST")
        deps: Deps = request.app.state.deps
        address = store.normalise_address(what.recipient)
        try:
            async with deps.sessions() as s:
                current = await store.get(s, what.account_id, address)
            if current is not None and current.covers(what.scope):
                REQUESTS.labels("POST", "already").inc()
                return _done(address, what)
            ev = make_event("unsubscribed", account_id=what.account_id, message_id=what.message_id,
                            recipient=what.recipient, reason=REASON, list_id=what.list_id,
                            client_ip=request.client.host if request.client else "",
                            user_agent=request.headers.get("user-agent", "")[:_UA_MAX])
            await publish_event(deps.js, ev)
            async with deps.sessions.begin() as s:
                info = await store.add(s, what.account_id, address, REASON, "unsubscribe",
                                       source_event_id=ev.event_id, scope=what.scope)
            await _mirror(request, deps).put(info)
        except (nats.errors.Error, JetStreamError, TimeoutError, OSError, SQLAlchemyError,
                MirrorUnavailable) as e:
            return _unavailable("POST", e)
        REQUESTS.labels("POST", "unsubscribed").inc()
        log.info("unsubscribe.recorded", account_id=what.account_id, scope=info.scope)
        return _done(address, what)

    return router
