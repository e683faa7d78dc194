"""The suppression list: addresses an account must not send to, and its mirror in a NATS KV bucket.

PostgreSQL is the source of truth (table ``suppressions``). The router checks every recipient of every
message, so it reads the ``SUPPRESSIONS`` KV bucket instead: a direct get is one round trip to the NATS
server it is connected to anyway, with no database connection per message. Writers (the recorder, the
API) commit the row first and put the KV entry after; :func:`reconcile` rebuilds the mirror from the
table (the recorder runs it at start) for the rare write whose KV half was lost. docs/suppressions.md.

A KV entry cannot expire on its own (nats-py has no per-key TTL), so the value carries ``expires_at``
and readers ignore an entry past it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from sqlalchemy import ColumnElement, and_, case, delete, func, null, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.jetstream import PipelinedJetStream
from postwire.core.topology import SUPPRESSIONS
from postwire.db.models import Suppression

log = structlog.get_logger(__name__)

KV_OPERATION = "KV-Operation"  # the header a KV delete or purge leaves on the key's last message

Source = Literal["bounce", "complaint", "manual", "soft_bounce_policy", "unsubscribe"]
SOURCES: tuple[Source, ...] = ("bounce", "complaint", "manual", "soft_bounce_policy", "unsubscribe")
# automatic sources never shorten or weaken what is there (see add())
SOFT: Source = "soft_bounce_policy"
MAX_PAGE = 1000
HASHED_PREFIX = "sha256:"
# what an entry blocks (docs/unsubscribe.md): every message, or an unsubscribe's bulk mail (of one list)
ALL = "all"
BULK = "bulk"
LIST_PREFIX = "list:"


def blocks(scope: str, lane: str, list_id: str = "") -> bool:
    """Whether an entry of ``scope`` stops a message of ``lane`` (transactional | bulk) naming
    ``list_id``: an unsubscribe stops the account's bulk mail (of that list, when it named one), never
    its transactional mail."""
    if scope == BULK:
        return lane == BULK
    if scope.startswith(LIST_PREFIX):
        return lane == BULK and scope == LIST_PREFIX + list_id
    return True


def normalise_address(address: str) -> str:
    """The stored form: trimmed and lower-cased (local parts are case-insensitive in practice)."""
    return address.strip().lower()


def hashed_address(address: str) -> str:
    """The form an erased address is kept in (docs/data-requests.md): ``sha256:<hex digest of the stored
    form>``. It still suppresses (same KV key) but no longer names anyone; it never holds an ``@``, so it
    cannot be mistaken for an address."""
    normal = normalise_address(address)
    if is_hashed(normal):
        return normal
    return HASHED_PREFIX + hashlib.sha256(normal.encode("utf-8")).hexdigest()


def is_hashed(address: str) -> bool:
    return address.startswith(HASHED_PREFIX) and "@" not in address


def _forms(address: str) -> tuple[str, ...]:
    """The stored forms that mean ``address``: as written (lower-cased) and erased (hashed)."""
    normal = normalise_address(address)
    return (normal,) if is_hashed(normal) else (normal, hashed_address(normal))


def kv_key(account_id: str, address: str) -> str:
    """``<account>.<sha256(address)[:32]>``: KV keys allow few characters, and a digest keeps addresses
    out of subjects (and out of NATS monitoring output). An erased entry's hashed form has the same key,
    so the router, which asks by the recipient's address, still finds it."""
    digest = hashed_address(address)[len(HASHED_PREFIX):][:32]
    return f"{account_id}.{digest}"


@dataclass(frozen=True)
class SuppressionInfo:
    account_id: str
    address: str
    reason: str
    source: str
    source_event_id: str | None
    created_at: datetime
    expires_at: datetime | None
    scope: str = ALL

    @classmethod
    def of(cls, row: Suppression) -> SuppressionInfo:
        return cls(row.account_id, row.address, row.reason, row.source, row.source_event_id,
                   row.created_at, row.expires_at, row.scope or ALL)

    def active(self, now: datetime | None = None) -> bool:
        return self.expires_at is None or self.expires_at > (now or datetime.now(UTC))

    def covers(self, scope: str) -> bool:
        """Whether this (active) entry already blocks, for good, all that an entry of ``scope`` would."""
        if self.scope == ALL:
            return self.expires_at is None
        return self.expires_at is None and self.scope in (BULK, scope)

    def kv_value(self) -> bytes:
        return json.dumps({
            "address": self.address, "reason": self.reason, "source": self.source,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None, "scope": self.scope,
        }, separators=(",", ":")).encode()


@dataclass(frozen=True)
class KvEntry:
    """What the router learns from the bucket."""

    address: str
    reason: str
    expires_at: datetime | None
    scope: str = ALL  # entries written before scopes existed block everything

    @classmethod
    def decode(cls, value: bytes) -> KvEntry:
        data = json.loads(value)
        expires = data.get("expires_at")
        return cls(data.get("address", ""), data.get("reason", ""),
                   datetime.fromisoformat(expires) if expires else None, data.get("scope") or ALL)

    def active(self, now: datetime | None = None) -> bool:
        return self.expires_at is None or self.expires_at > (now or datetime.now(UTC))


# --- the table --------------------------------------------------------------------------------------


def _is_expired(now: datetime) -> ColumnElement[bool]:
    return and_(Suppression.expires_at.is_not(None), Suppression.expires_at <= now)


def _is_active(now: datetime) -> ColumnElement[bool]:
    return or_(Suppression.expires_at.is_(None), Suppression.expires_at > now)


async def add(session: AsyncSession, account_id: str, address: str, reason: str, source: Source, *,
              source_event_id: str | None = None, expires_at: datetime | None = None,
              now: datetime | None = None, scope: str = ALL) -> SuppressionInfo:
    """Insert or renew; returns the row as it now stands.

    Renewing an active entry keeps its ``created_at`` (the listing order must not move under a client
    paging through it) and takes the new reason and source. A manual add is the customer's word: its
    expiry replaces the old one. Automatic adds never weaken: a permanent entry stays permanent, a
    longer expiry wins, and the soft-bounce policy does not overwrite a hard bounce or a complaint.
    An expired entry is replaced whole, as if it had not been there.

    Scopes: every source but ``unsubscribe`` blocks all mail (``scope`` all), and lifts an unsubscribe's
    entry to that. An unsubscribe (scope ``bulk`` or ``list:<id>``) never narrows a permanent entry of
    scope all; over one that expires it takes over (the unsubscribe must outlast it); two lists' make
    the entry ``bulk``.
    """
    now = now or datetime.now(UTC)
    stored = await _stored_form(session, account_id, address)
    stmt = insert(Suppression).values(
        account_id=account_id, address=stored, reason=reason, source=source,
        source_event_id=source_event_id, created_at=now, expires_at=expires_at, scope=scope)
    new = stmt.excluded
    expired = _is_expired(now)
    merged_scope = case((expired, new.scope), (new.scope == ALL, ALL),
                        (Suppression.scope == new.scope, new.scope), (Suppression.scope == ALL, new.scope),
                        else_=BULK)
    if source == "manual":
        expiry: Any = new.expires_at
    else:
        expiry = case((expired, new.expires_at),
                      (or_(Suppression.expires_at.is_(None), new.expires_at.is_(None)), null()),
                      else_=func.greatest(Suppression.expires_at, new.expires_at))
    where = or_(expired, Suppression.source == SOFT) if source == SOFT else None
    if scope != ALL:  # an unsubscribe: not over a permanent entry that blocks everything
        where = or_(expired, Suppression.scope != ALL, Suppression.expires_at.is_not(None))
    upsert = stmt.on_conflict_do_update(
        index_elements=[Suppression.account_id, Suppression.address],
        set_={"reason": new.reason, "source": new.source, "source_event_id": new.source_event_id,
              "expires_at": expiry, "scope": merged_scope,
              "created_at": case((expired, new.created_at), else_=Suppression.created_at)},
        where=where,
    ).returning(Suppression)
    row = (await session.execute(upsert)).scalar_one_or_none()
    if row is None:  # the policy's (an unsubscribe's) add lost to a stronger entry: report what stands
        row = await session.get(Suppression, (account_id, stored))
        assert row is not None
    return SuppressionInfo.of(row)


async def _stored_form(session: AsyncSession, account_id: str, address: str) -> str:
    """Where an add for ``address`` goes: onto its erased (hashed) entry when only that one exists, so a
    new bounce for an erased address renews the entry without writing the address down again."""
    forms = _forms(address)
    if len(forms) == 1:
        return forms[0]
    found = set(await session.scalars(select(Suppression.address).where(
        Suppression.account_id == account_id, Suppression.address.in_(forms))))
    return forms[1] if forms[1] in found and forms[0] not in found else forms[0]


async def remove(session: AsyncSession, account_id: str, address: str) -> bool:
    """Delete the account's entry for ``address`` (also its erased, hashed form); False when it had none
    (another account's entry for the same address is untouched)."""
    result = await session.execute(delete(Suppression).where(
        Suppression.account_id == account_id, Suppression.address.in_(_forms(address))))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get(session: AsyncSession, account_id: str, address: str,
              now: datetime | None = None) -> SuppressionInfo | None:
    """The active entry for ``address``, if any: as written, else its erased (hashed) form."""
    forms = _forms(address)
    rows = {r.address: SuppressionInfo.of(r) for r in await session.scalars(select(Suppression).where(
        Suppression.account_id == account_id, Suppression.address.in_(forms)))}
    for form in forms:
        info = rows.get(form)
        if info is not None and info.active(now):
            return info
    return None


async def is_suppressed_many(session: AsyncSession, account_id: str, addresses: Iterable[str],
                             now: datetime | None = None) -> set[str]:
    """The subset of ``addresses`` (in their normalised form) with an active entry, as written or erased
    (hashed): one query."""
    wanted = {form: normalise_address(a) for a in addresses for form in _forms(a)}
    if not wanted:
        return set()
    rows = await session.scalars(select(Suppression.address).where(
        Suppression.account_id == account_id, Suppression.address.in_(wanted),
        _is_active(now or datetime.now(UTC))))
    return {wanted[r] for r in rows}


# --- listing with an opaque cursor -----------------------------------------------------------------


class InvalidCursor(ValueError):
    """A cursor this module did not make."""


@dataclass(frozen=True)
class Cursor:
    """The last row of a page: the next page starts strictly after (created_at, address)."""

    created_at: datetime
    address: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.address], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            created, address = json.loads(raw)
            at = datetime.fromisoformat(created)
        except (binascii.Error, ValueError, TypeError) as e:
            raise InvalidCursor("not a cursor from this API") from e
        if not isinstance(address, str) or at.tzinfo is None:
            raise InvalidCursor("not a cursor from this API")
        return cls(at, address)


@dataclass(frozen=True)
class Filters:
    reason: str | None = None
    source: str | None = None
    prefix: str | None = None  # address prefix, matched case-insensitively


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_page(session: AsyncSession, account_id: str, filters: Filters, after: Cursor | None,
                    limit: int, now: datetime | None = None) -> list[SuppressionInfo]:
    """Active entries in (created_at, address) order, after ``after``. Keyset pagination: a row keeps
    its place while others are added, so paging from the start returns every row that existed when
    the walk began exactly once."""
    query = select(Suppression).where(Suppression.account_id == account_id,
                                      _is_active(now or datetime.now(UTC)))
    if filters.reason:
        query = query.where(Suppression.reason == filters.reason)
    if filters.source:
        query = query.where(Suppression.source == filters.source)
    if filters.prefix:
        query = query.where(Suppression.address.like(_escape_like(normalise_address(filters.prefix)) + "%",
                                                     escape="\\"))
    if after is not None:
        query = query.where(tuple_(Suppression.created_at, Suppression.address)
                            > tuple_(after.created_at, after.address))
    query = query.order_by(Suppression.created_at, Suppression.address).limit(min(limit, MAX_PAGE))
    return [SuppressionInfo.of(r) for r in await session.scalars(query)]


async def iter_all(sessions: async_sessionmaker[AsyncSession], account_id: str, filters: Filters,
                   page: int = MAX_PAGE) -> AsyncIterator[list[SuppressionInfo]]:
    """Every active entry, a page per short transaction (a long export holds no connection)."""
    after: Cursor | None = None
    while True:
        async with sessions() as s:
            rows = await list_page(s, account_id, filters, after, page)
        if not rows:
            return
        yield rows
        after = Cursor(rows[-1].created_at, rows[-1].address)


# --- the KV mirror ---------------------------------------------------------------------------------


class MirrorUnavailable(Exception):
    """The KV bucket could not be read or written (NATS down or slow)."""


class SuppressionMirror:
    """The ``SUPPRESSIONS`` bucket, bound lazily (Topology.apply creates it at every service start)."""

    def __init__(self, js: JetStreamContext, timeout_s: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout_s
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(SUPPRESSIONS)
        return self._kv

    async def put(self, info: SuppressionInfo) -> None:
        try:
            kv = await self._bucket()
            await asyncio.wait_for(kv.put(kv_key(info.account_id, info.address), info.kv_value()),
                                   self._timeout)
        except (nats.errors.Error, TimeoutError, OSError) as e:
            raise MirrorUnavailable(str(e) or type(e).__name__) from e

    async def delete(self, account_id: str, address: str) -> None:
        try:
            kv = await self._bucket()
            await asyncio.wait_for(kv.delete(kv_key(account_id, address)), self._timeout)
        except (nats.errors.Error, TimeoutError, OSError) as e:
            raise MirrorUnavailable(str(e) or type(e).__name__) from e

    async def lookup(self, account_id: str, address: str) -> KvEntry | None:
        """The active entry for ``address``, or None. Raises MirrorUnavailable rather than guess."""
        key = kv_key(account_id, address)
        try:
            value = await self._value(key)
        except KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError, OSError) as e:
            raise MirrorUnavailable(str(e) or type(e).__name__) from e
        if value is None:
            return None
        try:
            found = KvEntry.decode(value)
        except (ValueError, TypeError):
            log.error("suppressions.bad_kv_value", key=key)
            return None
        return found if found.active() else None

    async def _value(self, key: str) -> bytes | None:
        """The key's current value (None when deleted or never set). The router asks for every recipient
        of every message: with a PipelinedJetStream it is one direct get on the shared reply subscription
        (nats-py's KeyValue.get is a request of its own, with a random token and a new inbox)."""
        if isinstance(self._js, PipelinedJetStream):
            msg = await self._js.direct_get_last(f"KV_{SUPPRESSIONS}", f"$KV.{SUPPRESSIONS}.{key}",
                                                 timeout=self._timeout)
            if msg is None or (msg.headers or {}).get(KV_OPERATION) in ("DEL", "PURGE"):
                return None
            return msg.data
        kv = await self._bucket()
        entry = await asyncio.wait_for(kv.get(key), self._timeout)
        return entry.value

    async def lookup_many(self, account_id: str, addresses: Sequence[str]) -> dict[str, KvEntry]:
        """Concurrent gets; the active entries by the address as given. One address (most messages)
        is asked for directly: ``gather`` would make it a task of its own."""
        if len(addresses) == 1:
            found = [await self.lookup(account_id, addresses[0])]
        else:
            found = await asyncio.gather(*(self.lookup(account_id, a) for a in addresses))
        return {a: e for a, e in zip(addresses, found, strict=True) if e is not None}


async def reconcile(sessions: async_sessionmaker[AsyncSession], mirror: SuppressionMirror,
                    page: int = 1000) -> int:
    """Put every active row that is missing from the bucket (a writer that committed but crashed before
    its KV put); returns how many were restored. Entries are only added here, never removed, and each
    restored one is checked against the table again afterwards, so a removal racing with this pass
    (row deleted, then KV deleted, then our put) is undone rather than resurrected."""
    restored = 0
    last: tuple[str, str] = ("", "")
    while True:
        async with sessions() as s:
            rows = [SuppressionInfo.of(r) for r in await s.scalars(
                select(Suppression).where(tuple_(Suppression.account_id, Suppression.address) > last,
                                          _is_active(datetime.now(UTC)))
                .order_by(Suppression.account_id, Suppression.address).limit(page))]
        if not rows:
            return restored
        last = (rows[-1].account_id, rows[-1].address)
        missing = [r for r in rows if await mirror.lookup(r.account_id, r.address) is None]
        for info in missing:
            await mirror.put(info)
        await _undo_removed(sessions, mirror, missing)
        restored += len(missing)


async def _undo_removed(sessions: async_sessionmaker[AsyncSession], mirror: SuppressionMirror,
                        put: Sequence[SuppressionInfo]) -> None:
    for info in put:
        async with sessions() as s:
            still = await get(s, info.account_id, info.address)
        if still is None:
            await mirror.delete(info.account_id, info.address)
