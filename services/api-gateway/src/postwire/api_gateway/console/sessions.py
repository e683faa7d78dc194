"""Who is looking at the console: the session cookie, the CSRF check, and the login rate limit.

The cookie ``pw_console`` holds a random token (postwire.db.console_users keeps only its SHA-256):
HttpOnly, SameSite=Lax, Secure when the request came over TLS (directly or, behind the Ingress, by
``X-Forwarded-Proto``: uvicorn's proxy headers). Every form carries the session's CSRF token in a hidden
field ``csrf``; a POST without the right one is refused (403) before anything changes. Login attempts are
limited per client address and per login name with the shared buckets the API's limits use
(postwire.core.sharedlimits), so every gateway replica counts them together.
"""

from __future__ import annotations

import hmac
import time
from datetime import timedelta
from typing import Final

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from postwire.api_gateway.deps import Deps
from postwire.core.sharedlimits import LimitStore, SharedBuckets
from postwire.db import console_users
from postwire.db.console_users import Session

COOKIE: Final = "pw_console"
LIFETIME: Final = timedelta(hours=12)
# attempts: a burst of 10, then one per 30 s, per client address and per login name
LOGIN_BURST: Final = 10
LOGIN_RATE: Final = 1 / 30


class NotLoggedIn(Exception):
    """The request has no live session: the page answers with a redirect to the login form."""


class Forbidden(Exception):
    """A viewer tried to change something, or a form came without its CSRF token."""


class LoginLimiter:
    def __init__(self, store: LimitStore | None) -> None:
        self._buckets = SharedBuckets(store, "console.login", [(LOGIN_RATE, LOGIN_BURST)], clock=time.time)

    async def allow(self, client: str, username: str) -> bool:
        """Take an attempt for the address and for the name; False when either has none left."""
        by_client = await self._buckets.take(f"ip.{client}", 1)
        by_name = await self._buckets.take(f"user.{username.strip().lower()[:200]}", 1)
        return by_client <= 0 and by_name <= 0


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


async def current(request: Request) -> Session:
    """The live session of this request; raises NotLoggedIn."""
    token = request.cookies.get(COOKIE, "")
    if not token:
        raise NotLoggedIn
    async with _deps(request).sessions() as s:
        found = await console_users.session_of(s, token)
    if found is None:
        raise NotLoggedIn
    return found


def check_csrf(session: Session, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden("the form is stale or did not come from this console (missing CSRF token)")


def require_admin(session: Session) -> None:
    if not session.user.can_change:
        raise Forbidden("viewers can look but not change anything: ask an admin of the account")


def set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=int(LIFETIME.total_seconds()), httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/console")


def to_login(request: Request) -> RedirectResponse:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response
