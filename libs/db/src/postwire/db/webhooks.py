"""Webhook endpoints and their dead letters (docs/webhooks.md), plus the URL policy both the API (at
registration) and the notifier (at every delivery) apply.

The SSRF policy lives here, next to the table, because two services enforce it: the api-gateway refuses
to register a URL that points inside the network, and the notifier checks again right before each POST
(DNS may have changed since: rebinding) and then connects to the very address it checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from nats.js import JetStreamContext
from nats.js.api import Header
from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core.ids import new_id
from postwire.core.topology import webhook_retry_subject, webhook_subject
from postwire.db.models import Webhook, WebhookAttempt, WebhookDeadLetter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL = 2048
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def new_secret() -> str:
    """256 random bits; the prefix makes a leaked one recognisable (secret scanners)."""
    return "whsec_" + secrets.token_urlsafe(32)


# ------------------------------------------------------------------------------------------ URL policy


class UnsafeUrl(ValueError):
    """A webhook URL we refuse to call; the message says why (shown to the customer)."""


@dataclass(frozen=True)
class UrlPolicy:
    allow_http: bool = False
    allow_private: bool = False


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the URL's parts and the checked address to connect to."""

    scheme: str
    host: str  # as in the URL (lower case, no brackets)
    port: int
    path: str  # path and query, at least "/"
    address: str  # the resolved IP actually connected to


def check_url(url: str, policy: UrlPolicy) -> tuple[str, str, int, str]:
    """Syntax and scheme: (scheme, host, port, path?query). No credentials, no fragments."""
    if len(url) > MAX_URL:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL} characters")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeUrl("the URL must start with https://")
    if scheme == "http" and not policy.allow_http:
        raise UnsafeUrl("plain http is not allowed; use https:// (operators: POSTWIRE_WEBHOOK_ALLOW_HTTP)")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed; authenticate with the signature instead")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrl("the URL's port is not a number between 0 and 65535") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeUrl("the URL has no host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, path


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """False for loopback, private, link-local, multicast, reserved, unspecified, shared (CGNAT) and
    documentation ranges, including IPv4 addresses hidden inside IPv6 ones."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return is_public(inner)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                                 or ip.is_private or ip.is_unspecified)


async def resolve(host: str, port: int, policy: UrlPolicy) -> list[str]:
    """The host's addresses, refused (UnsafeUrl) if any is not public and the policy does not allow it.

    Every address must pass, not just the first: an attacker controlling DNS could otherwise mix a
    public and a private answer and win whichever the connection picks."""
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise UnsafeUrl(f"the host {host!r} does not resolve ({e})") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeUrl(f"the host {host!r} has no address")
    if not policy.allow_private:
        for a in addresses:
            if not is_public(ipaddress.ip_address(a.split("%")[0])):
                raise UnsafeUrl(f"the host {host!r} resolves to {a}, a non-public address "
                                "(operators: POSTWIRE_WEBHOOK_ALLOW_PRIVATE)")
    return addresses


async def check_target(url: str, policy: UrlPolicy) -> Target:
    """Everything the policy demands, then the address to connect to (the first checked one)."""
    scheme, host, port, path = check_url(url, policy)
    addresses = await resolve(host, port, policy)
    return Target(scheme, host, port, path, addresses[0])


# ------------------------------------------------------------------------------------------- storage


async def create_webhook(session: AsyncSession, account_id: str, url: str,
                         event_types: Sequence[str]) -> Webhook:
    row = Webhook(id=new_id("wh_"), account_id=account_id, url=url.strip(),
                  event_types=sorted(set(event_types)), secret=new_secret(), active=True)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def list_webhooks(session: AsyncSession, account_id: str) -> Sequence[Webhook]:
    return (await session.execute(select(Webhook).where(Webhook.account_id == account_id)
                                  .order_by(Webhook.created_at, Webhook.id))).scalars().all()


async def get_webhook(session: AsyncSession, account_id: str, webhook_id: str) -> Webhook | None:
    """Scoped to the account: another account's webhook is None, like a missing one."""
    return (await session.execute(select(Webhook).where(
        Webhook.id == webhook_id, Webhook.account_id == account_id))).scalar()


async def delete_webhook(session: AsyncSession, account_id: str, webhook_id: str) -> bool:
    result = await session.execute(delete(Webhook).where(
        Webhook.id == webhook_id, Webhook.account_id == account_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def webhook_by_id(session: AsyncSession, webhook_id: str) -> Webhook | None:
    return await session.get(Webhook, webhook_id)


async def all_active_webhooks(session: AsyncSession) -> Sequence[Webhook]:
    return (await session.execute(select(Webhook).where(Webhook.active.is_(True)))).scalars().all()


async def all_active_webhook_ids(session: AsyncSession) -> set[str]:
    return set((await session.execute(select(Webhook.id).where(Webhook.active.is_(True)))).scalars())


def matches(webhook_event_types: Sequence[str], event_type: str) -> bool:
    return not webhook_event_types or event_type in webhook_event_types


# -------------------------------------------------------------------------------------- dead letters


async def park(session: AsyncSession, *, webhook_id: str, account_id: str, event_id: str,
               payload: dict[str, Any], last_error: str, attempts: int, created_at: datetime) -> str:
    row = WebhookDeadLetter(id=new_id("dl_"), webhook_id=webhook_id, account_id=account_id,
                            event_id=event_id, payload=payload, last_error=last_error[:2000],
                            attempts=attempts, created_at=created_at)
    session.add(row)
    await session.flush()
    return row.id


async def list_dead_letters(session: AsyncSession, account_id: str, webhook_id: str, limit: int,
                            after: tuple[datetime, str] | None = None) -> Sequence[WebhookDeadLetter]:
    """Oldest parked first. Rows are only ever added with parked_at = now(), so (parked_at, id) keyset
    pagination is safe enough here; a replay removes rows, which never shifts a later page."""
    q = select(WebhookDeadLetter).where(WebhookDeadLetter.webhook_id == webhook_id,
                                        WebhookDeadLetter.account_id == account_id)
    if after is not None:
        q = q.where(tuple_(WebhookDeadLetter.parked_at, WebhookDeadLetter.id) > tuple_(*after))
    return (await session.execute(
        q.order_by(WebhookDeadLetter.parked_at, WebhookDeadLetter.id).limit(limit))).scalars().all()


async def take_dead_letters(session: AsyncSession, account_id: str, webhook_id: str,
                            ids: Sequence[str] | None, limit: int) -> Sequence[WebhookDeadLetter]:
    """Lock up to ``limit`` dead letters for a replay; the caller deletes them once re-enqueued, in the
    same transaction, so a failed publish leaves them parked (and a concurrent replay skips them)."""
    q = select(WebhookDeadLetter).where(WebhookDeadLetter.webhook_id == webhook_id,
                                        WebhookDeadLetter.account_id == account_id)
    if ids is not None:
        q = q.where(WebhookDeadLetter.id.in_(list(ids)))
    q = q.order_by(WebhookDeadLetter.parked_at, WebhookDeadLetter.id).limit(limit)
    return (await session.execute(q.with_for_update(skip_locked=True))).scalars().all()


async def forget_dead_letters(session: AsyncSession, ids: Sequence[str]) -> None:
    if ids:
        await session.execute(delete(WebhookDeadLetter).where(WebhookDeadLetter.id.in_(list(ids))))


# --------------------------------------------------------------------------------- attempts log


@dataclass(frozen=True)
class AttemptRecord:
    """One POST as the notifier saw it (a row of webhook_attempts)."""

    webhook_id: str
    account_id: str
    event_id: str
    event_type: str
    attempt: int
    outcome: str  # delivered | failed | refused
    http_status: int | None
    error: str
    duration_ms: int
    at: datetime


async def record_attempts(session: AsyncSession, records: Sequence[AttemptRecord]) -> None:
    """One INSERT for a batch; attempts of an endpoint deleted meanwhile are left out (the foreign key
    would refuse the whole batch)."""
    if not records:
        return
    ids = list({r.webhook_id for r in records})
    existing = set((await session.execute(select(Webhook.id).where(Webhook.id.in_(ids)))).scalars())
    rows = [{"webhook_id": r.webhook_id, "account_id": r.account_id, "event_id": r.event_id[:450],
             "event_type": r.event_type[:24], "attempt": r.attempt, "outcome": r.outcome,
             "http_status": r.http_status, "error": r.error[:2000], "duration_ms": r.duration_ms,
             "at": r.at} for r in records if r.webhook_id in existing]
    if rows:
        await session.execute(insert(WebhookAttempt), rows)


async def recent_attempts(session: AsyncSession, account_id: str, webhook_id: str,
                          limit: int) -> Sequence[WebhookAttempt]:
    """The endpoint's latest attempts, newest first."""
    return (await session.execute(select(WebhookAttempt).where(
        WebhookAttempt.webhook_id == webhook_id, WebhookAttempt.account_id == account_id)
        .order_by(WebhookAttempt.id.desc()).limit(limit))).scalars().all()


async def prune_attempts(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` attempts older than ``before`` (a bounded statement: the caller repeats)."""
    oldest = select(WebhookAttempt.id).where(WebhookAttempt.at < before).limit(limit).scalar_subquery()
    result = await session.execute(delete(WebhookAttempt).where(WebhookAttempt.id.in_(oldest)))
    return int(result.rowcount)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- the queue
# A delivery on WEBHOOKS is the exact JSON body to POST; headers carry its bookkeeping. The notifier
# queues fresh ones and retries; the API re-queues dead letters (replay) the same way.

H_ACCOUNT = "Postwire-Account"
H_EVENT = "Postwire-Event-Id"
H_FIRST_AT = "Postwire-First-At"  # unix seconds when first queued: the retry window counts from here
H_ATTEMPTS = "Postwire-Attempts"  # attempts already made
H_NOT_BEFORE = "Postwire-Not-Before"  # a retry: unix seconds before which it is not attempted
H_LAST_ERROR = "Postwire-Last-Error"


def payload(webhook_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """The body customers receive: the event in its API shape, and which endpoint it was sent to."""
    return {"webhook_id": webhook_id, "event": event}


def body_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    account_id: str
    event_id: str
    body: bytes
    first_at: float
    attempts: int = 0
    not_before: float = 0.0
    last_error: str = ""

    def headers(self) -> dict[str, str]:
        h = {H_ACCOUNT: self.account_id, H_EVENT: self.event_id, H_FIRST_AT: f"{self.first_at:.3f}",
             H_ATTEMPTS: str(self.attempts)}
        if self.not_before:
            h[H_NOT_BEFORE] = f"{self.not_before:.3f}"
        if self.last_error:  # header values are one line of limited length
            h[H_LAST_ERROR] = " ".join(self.last_error.split())[:500]
        return h

    @classmethod
    def from_headers(cls, webhook_id: str, headers: dict[str, str] | None, body: bytes) -> Delivery:
        h = headers or {}
        return cls(webhook_id=webhook_id, account_id=h.get(H_ACCOUNT, ""), event_id=h.get(H_EVENT, ""),
                   body=body, first_at=float(h.get(H_FIRST_AT) or time.time()),
                   attempts=int(h.get(H_ATTEMPTS) or 0), not_before=float(h.get(H_NOT_BEFORE) or 0),
                   last_error=h.get(H_LAST_ERROR, ""))


async def enqueue(js: JetStreamContext, d: Delivery, msg_id: str, *, retry: bool = False,
                  timeout: float = 5.0) -> None:
    """Publish ``d`` to its endpoint's queue (fresh, or retry); ``msg_id`` makes a re-publish after a
    lost PubAck a duplicate that JetStream drops."""
    subject = webhook_retry_subject(d.webhook_id) if retry else webhook_subject(d.webhook_id)
    await js.publish(subject, d.body, headers={**d.headers(), Header.MSG_ID: msg_id}, timeout=timeout)
