"""SMTP login verification with a short in-process cache of successes.

Applications often open one connection per message and log in every time; argon2id costs tens of
milliseconds of CPU by design, so without the cache the login, not the queue, would bound throughput.
Only successes are cached (failures always pay the full price, so guessing stays slow), keyed by an
HMAC-SHA-256 of username and password under a per-process random key: the cache never holds a password,
and its keys are useless outside this process. A revoked password keeps working for at most the TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.db.accounts import account_for_smtp_login
from postwire.ingest_smtp import metrics

Check = Callable[[str, str], Awaitable[str | None]]


class AuthUnavailable(Exception):
    """The credential store could not answer: reply 454 (temporary), not 535."""


@dataclass(frozen=True)
class Authenticated:
    """What a successful AUTH leaves in ``session.auth_data``: never the password."""

    account_id: str
    username: str


def database_check(sessions: async_sessionmaker[AsyncSession]) -> Check:
    """The real check: argon2id against PostgreSQL (the hashing runs in a thread)."""

    async def check(username: str, password: str) -> str | None:
        try:
            async with sessions() as session:
                return await account_for_smtp_login(session, username, password)
        except (SQLAlchemyError, OSError, TimeoutError) as e:
            raise AuthUnavailable(type(e).__name__) from e

    return check


class LoginVerifier:
    def __init__(self, check: Check, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._ttl = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[float, str]] = OrderedDict()

    async def verify(self, username: str, password: str) -> str | None:
        """The account id for this login, or None. Raises AuthUnavailable when the store is down."""
        key = self._cache_key(username, password)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            metrics.AUTH_CACHE_HITS.inc()
            return hit[1]
        account_id = await self._check(username, password)
        if account_id is not None and self._ttl > 0:
            self._remember(key, account_id)
        return account_id

    def _cache_key(self, username: str, password: str) -> bytes:
        u, p = username.encode(), password.encode()
        # length-prefixed, so ("ab", "c") and ("a", "bc") never collide
        return hmac.new(self._key, len(u).to_bytes(4, "big") + u + p, hashlib.sha256).digest()

    def _remember(self, key: bytes, account_id: str) -> None:
        self._cache[key] = (self._clock() + self._ttl, account_id)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
