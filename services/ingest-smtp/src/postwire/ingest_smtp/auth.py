"""SMTP login verification with a short in-process cache of successes.

Applications often open one connection per message and log in every time; argon2id costs tens of
milliseconds of CPU by design, so without the cache the login, not the queue, would bound throughput.
Only successes are cached (failures always pay the full price, so guessing stays slow), keyed by an
HMAC-SHA-256 of username and password under a per-process random key: the cache never holds a password,
and its keys are useless outside this process. A revoked password keeps working for at most the TTL.

A cached login carries the login's default switches as they were when it was verified, so a switch
changed with ``postwire smtp-login set`` applies to sessions that log in after the entry expired: at most
the TTL later, on each replica. A session keeps the switches it logged in with.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.db.accounts import LoginDefaults, SmtpLogin, verify_smtp_login
from postwire.ingest_smtp import metrics

Check = Callable[[str, str], Awaitable[SmtpLogin | None]]


class AuthUnavailable(Exception):
    """The credential store could not answer: reply 454 (temporary), not 535."""


@dataclass(frozen=True)
class Authenticated:
    """What a successful AUTH leaves in ``session.auth_data``: never the password."""

    account_id: str
    username: str
    defaults: LoginDefaults = field(default_factory=LoginDefaults)
    default_stream: str | None = None

    @classmethod
    def of(cls, login: SmtpLogin) -> Authenticated:
        return cls(login.account_id, login.username, login.defaults, login.default_stream)


def database_check(sessions: async_sessionmaker[AsyncSession]) -> Check:
    """The real check: argon2id against PostgreSQL (the hashing runs in a thread)."""

    async def check(username: str, password: str) -> SmtpLogin | None:
        try:
            async with sessions() as session:
                return await verify_smtp_login(session, username, password)
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
        self._cache: OrderedDict[bytes, tuple[float, SmtpLogin]] = OrderedDict()

    async def verify(self, username: str, password: str) -> SmtpLogin | None:
        """The login (account id, default switches), or None. Raises AuthUnavailable when the store is
        down."""
        key = self._cache_key(username, password)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            metrics.AUTH_CACHE_HITS.inc()
            return hit[1]
        login = await self._check(username, password)
        if login is not None and self._ttl > 0:
            self._remember(key, login)
        return login

    def _cache_key(self, username: str, password: str) -> bytes:
        u, p = username.encode(), password.encode()
        # length-prefixed, so ("ab", "c") and ("a", "bc") never collide
        return hmac.new(self._key, len(u).to_bytes(4, "big") + u + p, hashlib.sha256).digest()

    def _remember(self, key: bytes, login: SmtpLogin) -> None:
        self._cache[key] = (self._clock() + self._ttl, login)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
