"""Bearer API keys, resolved to an account through a small in-process cache.

The cache is keyed by SHA-256 of the token (the raw secret is never kept in memory longer than the
request) and bounded in size and age: a hot key costs no database round trip, a revoked key stops
working within ``api_key_cache_ttl_s``. Unknown keys are not cached, so a flood of random tokens can
not evict the real ones (each costs one primary-key lookup).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway import metrics
from postwire.api_gateway.errors import ApiError
from postwire.db.accounts import account_for_api_key

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey", bearerFormat="pw_<id>_<secret>",
                    description="An API key from `postwire account create NAME`.")


class KeyCache:
    """LRU with a TTL; single event loop, so no locking."""

    def __init__(self, ttl_s: float, max_size: int) -> None:
        self._ttl = ttl_s
        self._max = max_size
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, digest: str) -> str | None:
        item = self._items.get(digest)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[digest]
            return None
        self._items.move_to_end(digest)
        return item[1]

    def put(self, digest: str, account_id: str) -> None:
        self._items[digest] = (time.monotonic() + self._ttl, account_id)
        self._items.move_to_end(digest)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class Authenticator:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: KeyCache) -> None:
        self._sessions = sessions
        self._cache = cache

    async def account_for(self, token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        account_id = self._cache.get(digest)
        if account_id is None:
            async with self._sessions() as s:
                account_id = await account_for_api_key(s, token)
            if account_id is not None:
                self._cache.put(digest, account_id)
        return account_id


def _unauthorized(message: str, invalid: bool) -> ApiError:
    metrics.REJECTED.labels("unauthorized").inc()
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


async def current_account(request: Request,
                          creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> str:
    """FastAPI dependency: the caller's account id, or 401."""
    if creds is None:
        raise _unauthorized("missing API key: send Authorization: Bearer <api key>", invalid=False)
    authenticator: Authenticator = request.app.state.authenticator
    account_id = await authenticator.account_for(creds.credentials)
    if account_id is None:
        raise _unauthorized("invalid or revoked API key", invalid=True)
    return account_id


# the caller's account id, as a route parameter type: ``account_id: Account``
Account = Annotated[str, Depends(current_account)]
