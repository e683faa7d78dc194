"""/v1/suppressions over real HTTP, against a real PostgreSQL and the real SUPPRESSIONS KV bucket."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from nats.js import JetStreamContext

from postwire.db.accounts import NewCredentials
from postwire.db.suppressions import SuppressionMirror

from .conftest import Gateway, MakeAccount


async def _add(gw: Gateway, creds: NewCredentials, address: str, **extra: Any) -> httpx.Response:
    return await gw.http.post("/v1/suppressions", json={"address": address, **extra}, headers=gw.auth(creds))


async def _walk(gw: Gateway, creds: NewCredentials, limit: int, **params: str) -> list[str]:
    """Every address the listing returns, following next_cursor to the end."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        r = await gw.http.get("/v1/suppressions", params=query, headers=gw.auth(creds))
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [s["address"] for s in body["suppressions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


async def test_add_get_remove_mirrors_to_kv(gateway: Gateway, account: NewCredentials,
                                            js: JetStreamContext) -> None:
    r = await _add(gateway, account, "Jane.Doe@Example.COM", reason="unsubscribe")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["address"], body["reason"], body["source"], body["expires_at"]) == (
        "jane.doe@example.com", "unsubscribe", "manual", None)
    mirror = SuppressionMirror(js)
    entry = await mirror.lookup(account.account_id, "jane.doe@example.com")
    assert entry is not None and entry.reason == "unsubscribe"

    again = await _add(gateway, account, "jane.doe@example.com")  # renewal keeps created_at
    assert again.json()["created_at"] == body["created_at"] and again.json()["reason"] == "manual"

    r = await gateway.http.get("/v1/suppressions/JANE.DOE@example.com", headers=gateway.auth(account))
    assert r.status_code == 200 and r.json()["reason"] == "manual"
    r = await gateway.http.delete("/v1/suppressions/Jane.Doe@example.com", headers=gateway.auth(account))
    assert r.status_code == 204
    assert await mirror.lookup(account.account_id, "jane.doe@example.com") is None
    r = await gateway.http.delete("/v1/suppressions/jane.doe@example.com", headers=gateway.auth(account))
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_invalid_input_is_a_422(gateway: Gateway, account: NewCredentials) -> None:
    for payload, kind in [({"address": "not-an-address"}, "invalid_address"),
                          ({"address": "a@example.com", "reason": "Bad Reason"}, "invalid_reason"),
                          ({"address": "a@example.com", "expires_at": "2001-01-01T00:00:00Z"}, "expired")]:
        r = await gateway.http.post("/v1/suppressions", json=payload, headers=gateway.auth(account))
        assert r.status_code == 422, payload
        body = r.json()
        assert body["error"] == "validation_error" and body["detail"][0]["type"] == kind
    r = await gateway.http.get("/v1/suppressions", params={"cursor": "garbage"},
                               headers=gateway.auth(account))
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "invalid_cursor"
    r = await gateway.http.get("/v1/suppressions", params={"limit": 1001}, headers=gateway.auth(account))
    assert r.status_code == 422
    r = await gateway.http.get("/v1/suppressions")
    assert r.status_code == 401


async def test_pagination_returns_every_row_once_while_rows_are_added(
        gateway: Gateway, account: NewCredentials) -> None:
    first = [f"u{i:02d}@example.com" for i in range(25)]
    for a in first:
        assert (await _add(gateway, account, a)).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    added = 0
    while True:
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        r = await gateway.http.get("/v1/suppressions", params=params, headers=gateway.auth(account))
        body = r.json()
        seen += [s["address"] for s in body["suppressions"]]
        # between pages: new rows, and a renewal of one already seen (it must not move)
        await _add(gateway, account, f"new{added:02d}@example.com")
        await _add(gateway, account, first[0], reason="complaint")
        added += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(first) <= set(seen)
    assert seen[:25] == first  # oldest first
    assert set(await _walk(gateway, account, 1000)) == set(first) | {f"new{i:02d}@example.com"
                                                                      for i in range(added)}


async def test_filters(gateway: Gateway, account: NewCredentials) -> None:
    await _add(gateway, account, "alpha@example.com", reason="unsubscribe")
    await _add(gateway, account, "alpine@example.com")
    await _add(gateway, account, "beta_1@example.com")
    assert await _walk(gateway, account, 10, q="ALP") == ["alpha@example.com", "alpine@example.com"]
    assert await _walk(gateway, account, 10, reason="unsubscribe") == ["alpha@example.com"]
    assert await _walk(gateway, account, 10, q="beta_") == ["beta_1@example.com"]
    assert await _walk(gateway, account, 10, q="beta%") == []  # LIKE wildcards are literal
    assert await _walk(gateway, account, 10, source="bounce") == []
    assert len(await _walk(gateway, account, 10, source="manual")) == 3


async def test_export_csv(gateway: Gateway, account: NewCredentials) -> None:
    await _add(gateway, account, "one@example.com")
    await _add(gateway, account, "two@example.com",
               expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    r = await gateway.http.get("/v1/suppressions/export.csv", headers=gateway.auth(account))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["address", "reason", "source", "created_at", "expires_at"]
    assert [(row[0], row[1], row[2]) for row in rows[1:]] == [("one@example.com", "manual", "manual"),
                                                               ("two@example.com", "manual", "manual")]
    assert rows[1][4] == "" and datetime.fromisoformat(rows[2][4]) > datetime.now(UTC)


async def test_accounts_are_isolated(gateway: Gateway, make_account: MakeAccount,
                                     js: JetStreamContext) -> None:
    a, b = await make_account(), await make_account()
    await _add(gateway, a, "shared@example.com", reason="unsubscribe")
    await _add(gateway, a, "only-a@example.com")
    assert await _walk(gateway, b, 10) == []
    r = await gateway.http.get("/v1/suppressions/export.csv", headers=gateway.auth(b))
    assert r.text.strip().splitlines()[1:] == []
    assert (await gateway.http.get("/v1/suppressions/only-a@example.com",
                                   headers=gateway.auth(b))).status_code == 404
    assert (await gateway.http.delete("/v1/suppressions/only-a@example.com",
                                      headers=gateway.auth(b))).status_code == 404
    await _add(gateway, b, "shared@example.com")
    assert (await gateway.http.delete("/v1/suppressions/shared@example.com",
                                      headers=gateway.auth(b))).status_code == 204
    assert await _walk(gateway, a, 10) == ["shared@example.com", "only-a@example.com"]
    mirror = SuppressionMirror(js)
    assert await mirror.lookup(b.account_id, "shared@example.com") is None
    entry = await mirror.lookup(a.account_id, "shared@example.com")
    assert entry is not None and entry.reason == "unsubscribe"


async def test_an_expired_suppression_no_longer_blocks(gateway: Gateway, account: NewCredentials,
                                                        js: JetStreamContext) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    r = await _add(gateway, account, "brief@example.com", expires_at=expires.isoformat())
    assert r.status_code == 201
    mirror = SuppressionMirror(js)
    assert await mirror.lookup(account.account_id, "brief@example.com") is not None
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    assert await mirror.lookup(account.account_id, "brief@example.com") is None  # what the router asks
    assert (await gateway.http.get("/v1/suppressions/brief@example.com",
                                   headers=gateway.auth(account))).status_code == 404
    assert await _walk(gateway, account, 10) == []
    r = await _add(gateway, account, "brief@example.com")  # re-adding replaces it whole
    assert r.status_code == 201 and r.json()["expires_at"] is None
    assert datetime.fromisoformat(r.json()["created_at"]) > expires - timedelta(seconds=1.5)
