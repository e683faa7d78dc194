"""The console's Access page: API keys, SMTP logins and console users (docs/console.md).

Secrets (a new key, a login's password, a user's password) are shown once, in the answer to the form
that made them, and never again: only hashes are stored (postwire.db.accounts, console_users). Everyone
of the account sees the lists; only admins create and revoke.
"""

from __future__ import annotations

from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from postwire.api_gateway.console.pages import deps_of, page
from postwire.api_gateway.console.sessions import check_csrf, current, require_admin
from postwire.db import accounts, console_users
from postwire.db.console_users import EmailTaken, Session

log = structlog.get_logger(__name__)
Current = Annotated[Session, Depends(current)]
Csrf = Annotated[str | None, Form(max_length=100)]
# a key's or login's default lane (postwire.core.lanes): "auto" lets each message decide
Stream = Annotated[Literal["auto", "transactional", "bulk"], Form()]


async def _page(request: Request, session: Session, status_code: int = 200, **shown: str) -> Response:
    aid = session.user.account_id
    async with deps_of(request).sessions() as s:
        keys = await accounts.api_keys(s, aid)
        logins = await accounts.smtp_logins(s, aid)
        users = await console_users.users(s, aid)
    return page(request, "access.html", session, status_code=status_code, keys=keys, logins=logins,
                users=users, shown=shown)


def _lane(stream: str) -> str | None:
    return None if stream == "auto" else stream


def access_router() -> APIRouter:
    router = APIRouter(prefix="/console/access", include_in_schema=False)

    @router.get("")
    async def access(request: Request, session: Current) -> Response:
        return await _page(request, session)

    @router.post("/keys")
    async def new_key(request: Request, session: Current, csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        async with deps_of(request).sessions.begin() as s:
            token = await accounts.create_api_key(s, session.user.account_id)
        log.info("console.api_key_created", account_id=session.user.account_id, user_id=session.user.id)
        return await _page(request, session, api_key=token)

    @router.post("/keys/revoke")
    async def revoke_key(request: Request, session: Current, key_id: Annotated[str, Form(max_length=40)],
                         csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        async with deps_of(request).sessions.begin() as s:
            await accounts.revoke_api_key(s, session.user.account_id, key_id)
        log.info("console.api_key_revoked", account_id=session.user.account_id, user_id=session.user.id)
        return RedirectResponse("/console/access", status_code=303)

    @router.post("/keys/stream")
    async def key_stream(request: Request, session: Current, key_id: Annotated[str, Form(max_length=40)],
                         stream: Stream, csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        async with deps_of(request).sessions.begin() as s:
            await accounts.set_api_key_stream(s, session.user.account_id, key_id, _lane(stream))
        return RedirectResponse("/console/access", status_code=303)

    @router.post("/logins/stream")
    async def login_stream(request: Request, session: Current, username: Annotated[str, Form(max_length=200)],
                           stream: Stream, csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        async with deps_of(request).sessions.begin() as s:
            await accounts.set_smtp_login_stream(s, username, _lane(stream), session.user.account_id)
        return RedirectResponse("/console/access", status_code=303)

    @router.post("/logins")
    async def new_login(request: Request, session: Current, csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        aid = session.user.account_id
        async with deps_of(request).sessions.begin() as s:
            username, password = await accounts.create_smtp_login(s, aid, await accounts.account_name(s, aid))
        log.info("console.smtp_login_created", account_id=aid, user_id=session.user.id)
        return await _page(request, session, smtp_username=username, smtp_password=password)

    @router.post("/logins/remove")
    async def remove_login(request: Request, session: Current,
                           username: Annotated[str, Form(max_length=200)], csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        async with deps_of(request).sessions.begin() as s:
            await accounts.delete_smtp_login(s, session.user.account_id, username)
        return RedirectResponse("/console/access", status_code=303)

    @router.post("/users")
    async def new_user(request: Request, session: Current, email: Annotated[str, Form(max_length=320)],
                       role: Annotated[str, Form(max_length=10)] = "viewer", csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        try:
            async with deps_of(request).sessions.begin() as s:
                user, password = await console_users.create_user(
                    s, session.user.account_id, email, "admin" if role == "admin" else "viewer")
        except (EmailTaken, ValueError) as e:
            message = "a console user with that address exists" if isinstance(e, EmailTaken) else str(e)
            return await _page(request, session, status_code=422, error=message)
        return await _page(request, session, user_email=user.email, user_password=password)

    @router.post("/users/remove")
    async def remove_user(request: Request, session: Current, user_id: Annotated[int, Form()],
                          csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        if user_id == session.user.id:
            return await _page(request, session, status_code=422, error="you cannot remove yourself")
        async with deps_of(request).sessions.begin() as s:
            await console_users.remove_user(s, session.user.account_id, user_id)
        return RedirectResponse("/console/access", status_code=303)

    return router
