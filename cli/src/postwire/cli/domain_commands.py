"""`postwire domain add|list`: register sending domains and show the DNS records to publish."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import or_, select

from postwire.core.settings import PostwireSettings
from postwire.db.domains import (
    Algorithm,
    DnsRecord,
    DomainInfo,
    add_domain,
    dns_records,
    list_domains,
    mark_verified,
)
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Account

ALGORITHM_NAMES: dict[str, Algorithm] = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


class AccountNotFound(Exception):
    pass


async def _account_id(session: Any, name_or_id: str) -> str:
    row = (await session.execute(select(Account.id).where(
        or_(Account.id == name_or_id, Account.name == name_or_id)))).scalar()
    if row is None:
        raise AccountNotFound(name_or_id)
    return str(row)


async def add(database_url: str, account: str, name: str, algorithm: Algorithm,
              settings: PostwireSettings) -> tuple[DomainInfo, list[DnsRecord]]:
    """Raises AccountNotFound, InvalidDomain or DomainExists (postwire.db.domains)."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            account_id = await _account_id(session, account)
            selector = settings.dkim_default_selector or None
            row = await add_domain(session, account_id, name, algorithm, selector)
            return DomainInfo.of(row), dns_records(row, settings)
    finally:
        await engine.dispose()


async def trust(database_url: str, account: str, name: str) -> bool:
    """Mark the account's domain verified; False when it has no such domain."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return await mark_verified(session, await _account_id(session, account), name) is not None
    finally:
        await engine.dispose()


async def list_all(database_url: str, account: str | None,
                   settings: PostwireSettings) -> list[tuple[DomainInfo, list[DnsRecord]]]:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            account_id = await _account_id(session, account) if account else None
            rows = await list_domains(session, account_id)
            return [(DomainInfo.of(r), dns_records(r, settings)) for r in rows]
    finally:
        await engine.dispose()


def as_json(info: DomainInfo, records: list[DnsRecord]) -> dict[str, Any]:
    """The domain without its private key (DomainInfo has none), plus the records to publish."""
    data = asdict(info)
    data["created_at"] = info.created_at.isoformat()
    data["verified_at"] = info.verified_at.isoformat() if info.verified_at else None
    data["dns_records"] = [asdict(r) for r in records]
    return data


def as_text(info: DomainInfo, records: list[DnsRecord]) -> str:
    lines = [f"domain    {info.name} ({info.id}), account {info.account_id}",
             f"dkim      {info.dkim_algorithm}, selector {info.dkim_selector}",
             "verified  " + (f"{info.verified_at:%Y-%m-%d %H:%M} UTC" if info.verified_at else
                             "no: mail From it is refused until it is (docs/domains.md)"),
             "Publish these DNS records:"]
    for r in records:
        lines += [f"  {r.type:<6} {r.name}   ({r.purpose})", f"         {r.value}"]
    return "\n".join(lines)
