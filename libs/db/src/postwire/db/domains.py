"""Sending domains: an account's domains, their DKIM key pairs, and the DNS records to publish.

A domain name is stored as its lower-case IDNA A-label and belongs to at most one account. Keys are
generated here with ``cryptography`` in the formats dkimpy signs with: RSA-2048 as a PKCS#1 PEM, Ed25519
(RFC 8463) as the base64 32-byte seed. Private keys leave this module only towards the signer; listings
for people (CLI, API) use :class:`DomainInfo`, which has no private key.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol
from urllib.parse import urlsplit

import idna
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core.ids import new_id
from postwire.db.models import Domain

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
Purpose = Literal["dkim", "spf", "return_path", "tracking"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa-sha256", "ed25519-sha256")
RSA_BITS = 2048
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class InvalidDomain(ValueError):
    """Not a host name that mail can be sent from (or not a valid DKIM selector)."""


class DomainExists(Exception):
    """The name is registered already; ``same_account`` tells the caller's from another account's."""

    def __init__(self, name: str, same_account: bool) -> None:
        super().__init__(name)
        self.name = name
        self.same_account = same_account


class DnsSettings(Protocol):
    """The host names that go into the records (PostwireSettings has them)."""

    bounce_domain: str
    spf_include: str
    return_path_label: str
    tracking_base_url: str


@dataclass(frozen=True)
class DnsRecord:
    type: str
    name: str
    value: str
    purpose: Purpose


@dataclass(frozen=True)
class DomainInfo:
    """A domain as shown to its owner: everything but the private key."""

    id: str
    account_id: str
    name: str
    dkim_selector: str
    dkim_algorithm: str
    dkim_public_key: str
    created_at: datetime
    tracking_host: str | None = None
    verified_at: datetime | None = None  # None: mail From it is refused (postwire.db.sender_domains)

    @classmethod
    def of(cls, row: Domain) -> DomainInfo:
        return cls(row.id, row.account_id, row.name, row.dkim_selector, row.dkim_algorithm,
                   row.dkim_public_key, row.created_at, row.tracking_host, row.verified_at)


def normalise_name(name: str) -> str:
    """The lower-case A-label of ``name``; raises InvalidDomain for anything but a multi-label host name."""
    text = name.strip().rstrip(".")
    try:
        ascii_name = text.lower() if text.isascii() else idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise InvalidDomain(f"invalid domain name {name!r}: {e}") from None
    labels = ascii_name.lower().split(".")
    if len(labels) < 2 or len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidDomain(f"not a valid domain name: {name!r}")
    if labels[-1].isdigit():
        raise InvalidDomain(f"not a domain name (an IP address?): {name!r}")
    return ascii_name.lower()


def default_selector(now: datetime | None = None) -> str:
    """``pw`` + year and month: a new key next month gets a new selector, so rotation can overlap."""
    return f"pw{(now or datetime.now(UTC)):%Y%m}"


def generate_key(algorithm: Algorithm) -> tuple[str, str]:
    """(private key as dkimpy reads it, p= value). CPU-bound (RSA: ~50-200 ms): call it in a thread."""
    if algorithm == "rsa-sha256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pkcs1 = serialization.PrivateFormat.TraditionalOpenSSL  # "BEGIN RSA PRIVATE KEY", as dkimpy wants
        private = key.private_bytes(serialization.Encoding.PEM, pkcs1, serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return private, base64.b64encode(public).decode("ascii")
    if algorithm == "ed25519-sha256":
        ed = ed25519.Ed25519PrivateKey.generate()
        seed = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        raw_public = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(seed).decode("ascii"), base64.b64encode(raw_public).decode("ascii")
    raise ValueError(f"unknown DKIM algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")


async def add_domain(session: AsyncSession, account_id: str, name: str,
                     algorithm: Algorithm = "rsa-sha256", selector: str | None = None) -> Domain:
    """Register ``name`` for the account with a fresh key pair; the caller commits.

    Raises InvalidDomain, or DomainExists when any account (this one included) has the name already.
    """
    ascii_name = normalise_name(name)
    selector = (selector or default_selector()).lower()
    if not _SELECTOR.match(selector):
        raise InvalidDomain(f"not a valid DKIM selector: {selector!r}")
    existing = await _by_name(session, ascii_name)
    if existing is not None:
        raise DomainExists(ascii_name, existing.account_id == account_id)
    private, public = await asyncio.to_thread(generate_key, algorithm)
    row = Domain(id=new_id("d"), account_id=account_id, name=ascii_name, dkim_selector=selector,
                 dkim_algorithm=algorithm, dkim_private_key=private, dkim_public_key=public)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as e:  # registered concurrently by someone else
        raise DomainExists(ascii_name, same_account=False) from e
    await session.refresh(row, ["created_at"])
    return row


async def _by_name(session: AsyncSession, ascii_name: str) -> Domain | None:
    return (await session.execute(select(Domain).where(Domain.name == ascii_name))).scalar()


async def list_domains(session: AsyncSession, account_id: str | None = None) -> list[Domain]:
    """The account's domains by name (every account's when ``account_id`` is None: operators only)."""
    query = select(Domain).order_by(Domain.name)
    if account_id is not None:
        query = query.where(Domain.account_id == account_id)
    return list((await session.execute(query)).scalars())


async def get_domain(session: AsyncSession, account_id: str, name: str) -> Domain | None:
    """The account's domain ``name`` (any form: IDN, upper case), or None; another account's is None."""
    try:
        ascii_name = normalise_name(name)
    except InvalidDomain:
        return None
    row = await _by_name(session, ascii_name)
    return row if row is not None and row.account_id == account_id else None


async def delete_domain(session: AsyncSession, account_id: str, name: str) -> bool:
    """Remove the account's domain; False when it has no such domain. The caller commits."""
    try:
        ascii_name = normalise_name(name)
    except InvalidDomain:
        return False
    result = await session.execute(
        delete(Domain).where(Domain.account_id == account_id, Domain.name == ascii_name).returning(Domain.id))
    return result.first() is not None


async def set_tracking_host(session: AsyncSession, account_id: str, name: str,
                            host: str | None) -> Domain | None:
    """Point the domain's tracking links at ``host`` (None: back to the default base URL); None when the
    account has no such domain. Raises InvalidDomain for a host that is not a host name. The caller
    commits; dispatchers see it when their key cache refreshes (POSTWIRE_DKIM_CACHE_TTL_S)."""
    row = await get_domain(session, account_id, name)
    if row is None:
        return None
    row.tracking_host = normalise_name(host) if host else None
    await session.flush()
    return row


async def mark_verified(session: AsyncSession, account_id: str, name: str) -> Domain | None:
    """Record that the account's domain ``name`` is verified (its first verification time is kept);
    None when the account has no such domain. The caller commits."""
    row = await get_domain(session, account_id, name)
    if row is not None and row.verified_at is None:
        row.verified_at = datetime.now(UTC)
        await session.flush()
    return row


def parent_names(domain: str) -> list[str]:
    """``a.b.example.com`` → ``[a.b.example.com, b.example.com, example.com]``: the names whose key may
    sign mail from ``domain``, most specific first (never a bare TLD)."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


async def signing_domain(session: AsyncSession, account_id: str, from_domain: str) -> Domain | None:
    """The account's domain that signs mail From ``from_domain``: the domain itself, else its closest
    registered parent (d= then aligns with the From domain under DMARC's relaxed alignment)."""
    candidates: Sequence[str] = parent_names(from_domain)
    rows = (await session.execute(select(Domain).where(
        Domain.account_id == account_id, Domain.name.in_(candidates)))).scalars().all()
    return max(rows, key=lambda r: len(r.name), default=None)


def dns_records(domain: DomainInfo | Domain, settings: DnsSettings) -> list[DnsRecord]:
    """What the customer publishes in the domain's zone before sending (see docs/domains.md)."""
    k = "ed25519" if domain.dkim_algorithm == "ed25519-sha256" else "rsa"
    return [
        DnsRecord("TXT", f"{domain.dkim_selector}._domainkey.{domain.name}",
                  f"v=DKIM1; k={k}; p={domain.dkim_public_key}", "dkim"),
        DnsRecord("TXT", domain.name, f"v=spf1 include:{settings.spf_include} ~all", "spf"),
        DnsRecord("CNAME", f"{settings.return_path_label}.{domain.name}", settings.bounce_domain,
                  "return_path"),
        *_tracking_record(domain, settings),
    ]


def _tracking_record(domain: DomainInfo | Domain, settings: DnsSettings) -> list[DnsRecord]:
    """The tracking host's CNAME to the API's public host, when the domain has a tracking host."""
    target = urlsplit(settings.tracking_base_url).hostname
    if not domain.tracking_host or not target:
        return []
    return [DnsRecord("CNAME", domain.tracking_host, target, "tracking")]
