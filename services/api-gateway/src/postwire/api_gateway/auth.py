"""API keys, resolved to an account through a small in-process cache.

A key comes as ``Authorization: Bearer <key>`` or, as SMTPeter clients send it, as the query parameter
``?access_token=<key>``; the header wins when both are given. Neither is ever logged: uvicorn's access
log is off (postwire.core.ops.serve_app) and, should anyone turn it on, :class:`RedactAccessToken` blanks
the parameter in its lines; request metrics are labelled by route template; errors never echo the request.

The cache is keyed by SHA-256 of the token (the raw secret is never kept in memory longer than the
request) and bounded in size and age: a hot key costs no database round trip, a revoked key stops
working within ``api_key_cache_ttl_s``. Unknown keys are not cached, so a flood of random tokens can
not evict the real ones (each costs one primary-key lookup).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import OrderedDict
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway import metrics
from postwire.api_gateway.errors import ApiError
from postwire.api_gateway.ratelimit import RequestRate
from postwire.db.accounts import KeyOwner, api_key_for

T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey", bearerFormat="pw_<id>_<secret>",
                    description="An API key from `postwire account create NAME`.")
access_token = APIKeyQuery(name="access_token", auto_error=False, scheme_name="AccessToken",
                           description="The same API key as a query parameter (SMTPeter clients); the "
                                       "Authorization header wins when both are given.")


_ACCESS_TOKEN = re.compile(r"(access_token=)[^&\s\"']*", re.IGNORECASE)


class RedactAccessToken(logging.Filter):
    """Replaces the value of ``access_token=`` in a log record's message and arguments with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _ACCESS_TOKEN.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_ACCESS_TOKEN.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def redact_access_logs() -> None:
    """Install :class:`RedactAccessToken` on uvicorn's loggers (once per process)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactAccessToken) for f in logger.filters):
            logger.addFilter(RedactAccessToken())


class KeyCache(Generic[T]):
    """LRU with a TTL; single event loop, so no locking."""

    def __init__(self, ttl_s: float, max_size: int) -> None:
        self._ttl = ttl_s
        self._max = max_size
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def get(self, digest: str) -> T | None:
        item = self._items.get(digest)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[digest]
            return None
        self._items.move_to_end(digest)
        return item[1]

    def put(self, digest: str, value: T) -> None:
        self._items[digest] = (time.monotonic() + self._ttl, value)
        self._items.move_to_end(digest)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class Authenticator:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: KeyCache[KeyOwner]) -> None:
        self._sessions = sessions
        self._cache = cache

    async def account_for(self, token: str) -> str | None:
        owner = await self.key_for(token)
        return None if owner is None else owner.account_id

    async def key_for(self, token: str) -> KeyOwner | None:
        """The key's account and defaults (its default stream)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        owner = self._cache.get(digest)
        if owner is None:
            async with self._sessions() as s:
                owner = await api_key_for(s, token)
            if owner is not None:
                self._cache.put(digest, owner)
        return owner


def _unauthorized(message: str, invalid: bool) -> ApiError:
    metrics.REJECTED.labels("unauthorized").inc()
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


async def current_account(request: Request,
                          creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                          query_token: Annotated[str | None, Security(access_token)]) -> str:
    """FastAPI dependency: the caller's account id, or 401 (429 over the account's request rate)."""
    token = creds.credentials if creds is not None else query_token
    if not token:
        raise _unauthorized("missing API key: send Authorization: Bearer <api key> (or ?access_token=)",
                            invalid=False)
    authenticator: Authenticator = request.app.state.authenticator
    owner = await authenticator.key_for(token)
    if owner is None:
        raise _unauthorized("invalid or revoked API key", invalid=True)
    account_id = owner.account_id
    request.state.key_stream = owner.default_stream  # the sending routes' default lane (accept.py)
    rate: RequestRate = request.app.state.request_rate
    await rate.check(account_id)  # 429 once the account's request rate is used up (ratelimit.py)
    return account_id


# the caller's account id, as a route parameter type: ``account_id: Account``
Account = Annotated[str, Depends(current_account)]
