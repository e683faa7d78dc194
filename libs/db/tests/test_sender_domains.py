"""Which From domains an account may send as (postwire.db.sender_domains), against a real PostgreSQL: the
verified domains and their subdomains, never their parents or another account's, and a cache that keeps
answering from what it knew while the database is away."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from postwire.db.accounts import create_account
from postwire.db.domains import add_domain, mark_verified
from postwire.db.engine import make_engine
from postwire.db.sender_domains import FromPolicies, FromPolicy, PolicyUnavailable
from postwire.testing.ports import free_port


def test_a_verified_domain_covers_itself_and_its_subdomains_only() -> None:
    policy = FromPolicy(allow_any=False, verified=frozenset({"mail.shop.example", "xn--bcher-kva.example"}))
    assert policy.unverified(["mail.shop.example", "eu.news.mail.shop.example", "MAIL.Shop.example"]) is None
    assert policy.unverified(["mail.shop.example", "shop.example"]) == "shop.example"
    assert policy.unverified(["evilmail.shop.example"]) == "evilmail.shop.example"
    assert policy.unverified(["bücher.example"]) is None  # an internationalised From matches its A-label
    assert FromPolicy(allow_any=True, verified=frozenset()).unverified(["anything.example"]) is None


async def test_policies_follow_the_database_and_survive_its_absence(pg_url: str) -> None:
    engine, down = make_engine(pg_url), make_engine(f"postgresql+asyncpg://x:y@127.0.0.1:{free_port()}/none")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = [0.0]
    try:
        async with sessions.begin() as s:
            mine = (await create_account(s, f"from-{uuid.uuid4().hex[:8]}")).account_id
            theirs = (await create_account(s, f"from-{uuid.uuid4().hex[:8]}")).account_id
            name = f"shop{uuid.uuid4().hex[:8]}.example"
            await add_domain(s, theirs, f"other-{name}", "ed25519-sha256")
            await mark_verified(s, theirs, f"other-{name}")
            await add_domain(s, mine, name, "ed25519-sha256")
        policies = FromPolicies(sessions, ttl_s=30, clock=lambda: now[0])

        assert await policies.unverified(mine, [name]) == name  # registered, not verified
        assert await policies.unverified(mine, [f"other-{name}"]) == f"other-{name}"
        async with sessions.begin() as s:
            await mark_verified(s, mine, name)
        assert await policies.unverified(mine, [name]) == name  # cached for the TTL
        now[0] = 31.0
        assert await policies.unverified(mine, [name]) is None

        sessions.configure(bind=down)  # the database goes away
        now[0] = 100.0
        assert await policies.unverified(mine, [name]) is None  # what it knew keeps answering
        with pytest.raises(PolicyUnavailable):
            await policies.unverified(theirs, [name])  # never loaded: a temporary failure, not a refusal
        assert await policies.unverified(theirs, []) is None  # nothing to check needs no database
    finally:
        await engine.dispose()
        await down.dispose()
