"""Which From domains an account may send as (docs/domains.md, "Verified From domains").

Receivers judge a message by its From domain (DMARC). The dispatcher signs with the account's domain that
is the From domain or its closest registered parent (``postwire.db.domains.signing_domain``), so mail From
a domain the account has not verified would go out unsigned and fail DMARC, or let one customer send as a
domain that is not theirs from the operator's IP addresses. ingest-smtp and the API therefore refuse it
(550 5.7.1 / 422) unless the account is allowed unverified From domains.

:class:`FromPolicies` keeps each account's verified domains for a few seconds, so the check costs no
database round trip per message; a domain verified (or an account's permission changed) takes effect
within that TTL on every replica.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import idna
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.db.domains import parent_names
from postwire.db.models import Account, Domain


class PolicyUnavailable(Exception):
    """The database could not say which domains the account verified: answer a temporary failure."""


@dataclass(frozen=True)
class FromPolicy:
    """An account's verified sending domains, and whether it may send From any domain anyway."""

    allow_any: bool
    verified: frozenset[str]

    def unverified(self, domains: Iterable[str]) -> str | None:
        """The first of ``domains`` that is neither a verified domain nor a subdomain of one (DKIM's d=
        then aligns with it under DMARC's relaxed alignment); None when all may be sent from."""
        if self.allow_any:
            return None
        for domain in domains:
            name = _a_label(domain)
            if name is None or not any(parent in self.verified for parent in parent_names(name)):
                return domain
        return None


def _a_label(domain: str) -> str | None:
    """The lower-case A-label of a From domain (an internationalised one arrives as UTF-8); None when it
    is not a host name at all."""
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None


async def from_policy(session: AsyncSession, account_id: str) -> FromPolicy:
    """The account's policy as stored now; an unknown account may send from nothing."""
    allow = (await session.execute(select(Account.allow_unverified_from)
                                   .where(Account.id == account_id))).scalar()
    names = (await session.execute(select(Domain.name).where(
        Domain.account_id == account_id, Domain.verified_at.is_not(None)))).scalars()
    return FromPolicy(bool(allow), frozenset(names))


async def set_allow_unverified_from(session: AsyncSession, account_id: str, allow: bool) -> bool:
    """Allow (or stop allowing) the account to send From unverified domains; False when there is no such
    account. The caller commits."""
    row = await session.get(Account, account_id)
    if row is None:
        return False
    row.allow_unverified_from = allow
    await session.flush()
    return True


class FromPolicies:
    """Each account's :class:`FromPolicy`, loaded at most once per TTL and account (concurrent first
    messages share one query). While the database is away, a policy loaded before keeps answering."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_s: float = 30.0,
                 max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._ttl = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, FromPolicy]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[FromPolicy]] = {}

    async def unverified(self, account_id: str, domains: list[str]) -> str | None:
        """The first of ``domains`` the account may not send From, or None. Raises PolicyUnavailable."""
        if not domains:
            return None
        return (await self.get(account_id)).unverified(domains)

    async def get(self, account_id: str) -> FromPolicy:
        hit = self._cache.get(account_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        task = self._loading.get(account_id)
        if task is None:
            task = asyncio.ensure_future(self._load(account_id))
            self._loading[account_id] = task
            task.add_done_callback(lambda _: self._loading.pop(account_id, None))
        try:
            return await asyncio.shield(task)
        except PolicyUnavailable:
            if hit is None:
                raise
            # keep answering from it for another TTL: no connection attempt per message while it is away
            self._cache[account_id] = (self._clock() + self._ttl, hit[1])
            return hit[1]

    async def _load(self, account_id: str) -> FromPolicy:
        try:
            async with self._sessions() as session:
                policy = await from_policy(session, account_id)
        except (SQLAlchemyError, OSError, TimeoutError) as e:
            raise PolicyUnavailable(type(e).__name__) from e
        self._cache[account_id] = (self._clock() + self._ttl, policy)
        self._cache.move_to_end(account_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return policy
