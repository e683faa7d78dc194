"""Idempotency-Keys expire after POSTWIRE_IDEMPOTENCY_TTL_S: honoured before, free for a new request
after, and deleted by the purge. Time passing is a row's ``created_at`` moved back in PostgreSQL, or
(last test) a lifetime of one second waited for as a condition, never a sleep."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.idempotency import IdempotencyStore
from postwire.api_gateway.settings import ApiSettings
from postwire.db.accounts import NewCredentials
from postwire.db.models import IdempotencyKey
from postwire.testing.fixtures import eventually

if TYPE_CHECKING:
    from .conftest import Gateway, Inbound, StartGateway

TTL_S = 3600.0


def message(subject: str) -> dict[str, Any]:
    return {"from": "a@example.com", "to": ["b@example.org"], "subject": subject, "text": "t"}


async def age(sessions: async_sessionmaker[AsyncSession], account: NewCredentials, key: str,
              seconds: float) -> None:
    """Make the key's row ``seconds`` old, as if that much time had passed since its request."""
    async with sessions.begin() as s:
        result = await s.execute(text(
            "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => :age) "
            "WHERE account_id = :account AND key = :key"), {"age": seconds, "account": account.account_id,
                                                             "key": key})
    assert getattr(result, "rowcount", 0) == 1


async def send(gw: Gateway, account: NewCredentials, key: str, subject: str) -> httpx.Response:
    return await gw.http.post("/v1/messages", json=message(subject),
                              headers=gw.auth(account, **{"Idempotency-Key": key}))


async def test_a_key_is_honoured_until_it_expires_then_free(
        start_gateway: StartGateway, account: NewCredentials, sessions: async_sessionmaker[AsyncSession],
        inbound: Inbound) -> None:
    gw = await start_gateway(idempotency_ttl_s=TTL_S)
    first = await send(gw, account, "order-1", "first")
    assert first.status_code == 202, first.text
    await age(sessions, account, "order-1", TTL_S - 60)  # a minute before it expires
    replay = await send(gw, account, "order-1", "first")
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    reused = await send(gw, account, "order-1", "another message")
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
    assert await inbound.count() == 1

    await age(sessions, account, "order-1", TTL_S + 1)  # expired: the key is free for a new request
    fresh = await send(gw, account, "order-1", "another message")
    assert fresh.status_code == 202, fresh.text
    assert "Idempotent-Replayed" not in fresh.headers and fresh.json()["id"] != first.json()["id"]
    assert await inbound.count() == 2
    again = await send(gw, account, "order-1", "another message")  # and is honoured for the new one
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == fresh.json()["id"]
    assert await inbound.count() == 2


async def test_expired_keys_are_purged(start_gateway: StartGateway, account: NewCredentials,
                                       sessions: async_sessionmaker[AsyncSession]) -> None:
    gw = await start_gateway()  # the default lifetime: 24 hours
    for key in ("old", "recent"):
        assert (await send(gw, account, key, key)).status_code == 202
    await age(sessions, account, "old", 24 * 3600 + 1)
    await age(sessions, account, "recent", 24 * 3600 - 60)
    assert await IdempotencyStore(sessions, lease_s=60, ttl_s=24 * 3600).purge(batch=1) >= 1
    async with sessions() as s:
        left = set(await s.scalars(select(IdempotencyKey.key).where(
            IdempotencyKey.account_id == account.account_id)))
    assert left == {"recent"}


async def test_a_short_lifetime_frees_the_key_without_help(start_gateway: StartGateway,
                                                           account: NewCredentials) -> None:
    gw = await start_gateway(idempotency_ttl_s=1.0, idempotency_lease_s=0.5)
    assert (await send(gw, account, "k", "first")).status_code == 202

    async def free() -> bool:  # 422 (the key is still the first request's) until it expires
        return (await send(gw, account, "k", "second")).status_code == 202

    await eventually(free)


def test_the_lifetime_defaults_to_a_day_and_must_outlast_the_lease() -> None:
    assert ApiSettings().idempotency_ttl_s == 24 * 3600
    with pytest.raises(ValueError, match="IDEMPOTENCY_TTL_S"):
        ApiSettings(idempotency_ttl_s=30, idempotency_lease_s=60)
