"""The console's Webhooks page: the account's endpoints, their recent deliveries (every POST with its
status), their dead letters (deliveries given up after
the retry window) with a replay button, and a button that sends a signed test event — the same
functions as the API's routes (routes_webhooks: replay_dead_letters, send_test_event)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from postwire.api_gateway.console.pages import deps_of, page
from postwire.api_gateway.console.sessions import check_csrf, current, require_admin
from postwire.api_gateway.errors import ApiError
from postwire.api_gateway.routes_webhooks import replay_dead_letters, send_test_event
from postwire.db import webhooks as store
from postwire.db.console_users import Session

Current = Annotated[Session, Depends(current)]
Csrf = Annotated[str | None, Form(max_length=100)]
SHOWN_DEAD: Final = 20
SHOWN_RECENT: Final = 20


async def _page(request: Request, session: Session, status_code: int = 200, **notice: str) -> Response:
    aid = session.user.account_id
    async with deps_of(request).sessions() as s:
        hooks = await store.list_webhooks(s, aid)
        dead = {h.id: await store.list_dead_letters(s, aid, h.id, SHOWN_DEAD, None) for h in hooks}
        recent = {h.id: await store.recent_attempts(s, aid, h.id, SHOWN_RECENT) for h in hooks}
    return page(request, "webhooks.html", session, status_code=status_code, hooks=hooks, dead=dead,
                recent=recent, notice=notice)


def webhooks_router() -> APIRouter:
    router = APIRouter(prefix="/console/webhooks", include_in_schema=False)

    @router.get("")
    async def webhooks(request: Request, session: Current) -> Response:
        return await _page(request, session)

    @router.post("/{webhook_id}/test")
    async def test(request: Request, session: Current, webhook_id: str, csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        try:
            queued = await send_test_event(request, session.user.account_id, webhook_id[:40])
        except ApiError as e:
            return await _page(request, session, status_code=e.status_code, error=e.message)
        return await _page(request, session, sent=f"test event {queued.event_id} queued for {webhook_id}")

    @router.post("/{webhook_id}/replay")
    async def replay(request: Request, session: Current, webhook_id: str, csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        try:
            n = await replay_dead_letters(request, session.user.account_id, webhook_id[:40], None)
        except ApiError as e:
            return await _page(request, session, status_code=e.status_code, error=e.message)
        return await _page(request, session, sent=f"{n} dead letter(s) queued again")

    return router
