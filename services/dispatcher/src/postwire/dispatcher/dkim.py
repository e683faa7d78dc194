"""DKIM signing (router; the sender for tracked mail): which key signs, where keys come from, the signature.

Which key: the account's registered domain equal to the From header's domain, else its closest
registered parent (From ``news.example.com`` is signed ``d=example.com`` when only example.com is
registered: that still aligns under DMARC's relaxed alignment). No match → the message goes unsigned.

Where from: PostgreSQL, through :class:`KeyCache`, one entry per account holding all its keys (an
account without domains is cached as empty, so most mail costs no lookup and no body read). Entries live
``dkim_cache_ttl_s``; concurrent misses share one query. When PostgreSQL cannot be read an expired entry
is still used (keys rarely change; signing with last minute's key beats not signing); with nothing
cached :class:`KeysUnavailable` makes the router wait (nak with delay) instead of sending unsigned mail,
which receivers enforcing DMARC ``p=reject`` would refuse or junk, hurting the domain's reputation.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses

import dkim
import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from postwire.db.domains import InvalidDomain, list_domains, normalise_name, parent_names
from postwire.db.engine import async_url, make_sessionmaker
from postwire.dispatcher import dkim_rsa
from postwire.dispatcher.settings import DispatcherSettings

log = structlog.get_logger(__name__)

# RFC 6376 §5.4.1's list, plus the headers one-click unsubscribe (RFC 8058) requires to be signed
SIGNED_HEADERS = ("from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
                  "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
                  "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe",
                  "list-unsubscribe-post", "list-post", "list-owner", "list-archive", "feedback-id")
# signed once more than they occur, so a second copy added in transit breaks the signature
OVERSIGNED = ("from", "reply-to", "subject", "date", "to", "cc", "list-unsubscribe",
              "list-unsubscribe-post")
# kept here rather than in metrics.py while that file is being reworked; move it there with the next change
DKIM_SIGNED = Counter("postwire_dispatcher_dkim_signatures_total",
                      "Messages the router DKIM-signed, by algorithm; no_key = the account has domains, "
                      "but none covers the From domain; error = signing failed, sent unsigned.",
                      ["algorithm"])
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


class KeysUnavailable(Exception):
    """The account's keys could not be read and none are cached: the message must wait."""


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str
    private_key: bytes = field(repr=False)


@dataclass(frozen=True)
class AccountKeys:
    """An account's keys by domain name (lower-case A-label)."""

    by_domain: dict[str, SigningKey]
    # the domains' own tracking host names (docs/tracking.md), where set
    tracking_hosts: dict[str, str] = field(default_factory=dict)

    def tracking_host_for(self, from_domain: str) -> str | None:
        for name in parent_names(from_domain):
            if name in self.tracking_hosts:
                return self.tracking_hosts[name]
        return None

    def __bool__(self) -> bool:
        return bool(self.by_domain)

    def for_from_domain(self, from_domain: str) -> SigningKey | None:
        for name in parent_names(from_domain):
            if name in self.by_domain:
                return self.by_domain[name]
        return None


KeyLoader = Callable[[str], Awaitable[AccountKeys]]


def db_loader(sessions: async_sessionmaker[AsyncSession], timeout_s: float) -> KeyLoader:
    """Read an account's keys from PostgreSQL; slower than ``timeout_s`` counts as unavailable."""

    async def load(account_id: str) -> AccountKeys:
        async with asyncio.timeout(timeout_s), sessions() as session:
            rows = await list_domains(session, account_id)
        return AccountKeys({r.name: SigningKey(r.name, r.dkim_selector, r.dkim_algorithm,
                                               r.dkim_private_key.encode("ascii")) for r in rows},
                           {r.name: r.tracking_host for r in rows if r.tracking_host})

    return load


@dataclass
class _Entry:
    keys: AccountKeys
    expires: float


class KeyCache:
    """Per-account keys with a TTL, LRU-bounded, stale-if-error, one load per account at a time."""

    def __init__(self, load: KeyLoader, ttl_s: float, max_size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._ttl = ttl_s
        self._max = max_size
        self._clock = clock
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Task[AccountKeys]] = {}

    async def get(self, account_id: str) -> AccountKeys:
        entry = self._items.get(account_id)
        if entry is not None and entry.expires > self._clock():
            self._items.move_to_end(account_id)
            return entry.keys
        try:
            return await asyncio.shield(self._loading_task(account_id))
        except Exception as e:
            if entry is not None:
                log.warning("dkim.keys_stale", account_id=account_id, error=str(e) or type(e).__name__)
                return entry.keys
            raise KeysUnavailable(str(e) or type(e).__name__) from e

    def _loading_task(self, account_id: str) -> asyncio.Task[AccountKeys]:
        task = self._loading.get(account_id)
        if task is None:
            task = asyncio.create_task(self._fetch(account_id))
            self._loading[account_id] = task
            task.add_done_callback(lambda _: self._loading.pop(account_id, None))
        return task

    async def _fetch(self, account_id: str) -> AccountKeys:
        keys = await self._load(account_id)
        self._items[account_id] = _Entry(keys, self._clock() + self._ttl)
        self._items.move_to_end(account_id)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        return keys


def header_block(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end >= 0:
            return raw[:end + len(sep) // 2]
    return raw


def from_domain(raw: bytes) -> str | None:
    """The A-label domain of the first From address, or None when there is no usable one."""
    head = header_block(raw).decode("utf-8", "replace")
    values = HeaderParser(policy=compat32).parsestr(head, headersonly=True).get_all("From") or []
    addresses = [addr for _, addr in getaddresses([str(v) for v in values]) if "@" in addr]
    if not addresses:
        return None
    try:
        return normalise_name(addresses[0].rpartition("@")[2])
    except InvalidDomain:
        return None


def include_headers(raw: bytes) -> list[bytes]:
    """h=: the SIGNED_HEADERS present (each once), then the OVERSIGNED ones present once more."""
    present = {m.group(1).lower().decode("ascii") for m in _HEADER_NAME.finditer(header_block(raw))}
    signed = [h for h in SIGNED_HEADERS if h in present]
    return [h.encode() for h in signed + [h for h in OVERSIGNED if h in present]]


def sign_message(raw: bytes, key: SigningKey) -> bytes:
    """``raw`` with a DKIM-Signature prepended: relaxed/relaxed, no l= (a signature with l= lets anyone
    append content), the header fields from :func:`include_headers`. CPU-bound: run it in a thread."""
    linesep = b"\r\n" if b"\r\n" in header_block(raw) else b"\n"
    signature = dkim.sign(raw, key.selector.encode(), key.domain.encode(), key.private_key,
                          signature_algorithm=key.algorithm.encode(), canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=include_headers(raw), length=False, linesep=linesep)
    assert isinstance(signature, bytes)
    return signature + raw


class DkimSigner:
    """What the router uses: the account's keys (cached), then a signature for the From domain."""

    def __init__(self, cache: KeyCache) -> None:
        self._cache = cache
        dkim_rsa.install()  # RSA signatures from OpenSSL instead of dkimpy's pure Python

    async def keys_for(self, account_id: str) -> AccountKeys:
        """Raises KeysUnavailable when PostgreSQL cannot be read and nothing is cached."""
        return await self._cache.get(account_id)

    async def sign(self, raw: bytes, keys: AccountKeys) -> tuple[bytes, SigningKey] | None:
        """The signed message and the key used, or None when no key of ``keys`` covers the From domain."""
        domain = from_domain(raw)
        key = keys.for_from_domain(domain) if domain else None
        if key is None:
            DKIM_SIGNED.labels("no_key").inc()
            return None
        try:
            return await asyncio.to_thread(sign_message, raw, key), key
        except dkim.DKIMException as e:  # a message dkimpy cannot parse, or a broken key: retrying won't help
            log.error("dkim.sign_failed", d=key.domain, s=key.selector, error=str(e) or type(e).__name__)
            DKIM_SIGNED.labels("error").inc()
            return None


def make_signer(settings: DispatcherSettings) -> DkimSigner:
    """The signer with its key cache. The engine has no pool (NullPool): keys are cached, so it connects
    rarely, and no connection is left open for shutdown to close."""
    engine = create_async_engine(async_url(settings.database_url), poolclass=NullPool, hide_parameters=True,
                                 connect_args={"timeout": settings.dkim_lookup_timeout_s})
    cache = KeyCache(db_loader(make_sessionmaker(engine), settings.dkim_lookup_timeout_s),
                     settings.dkim_cache_ttl_s, settings.dkim_cache_size)
    return DkimSigner(cache)
