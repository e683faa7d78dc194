"""Request body limits on every route, per-account request rate limits and send quotas (429)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from postwire.api_gateway.errors import ApiError, InvalidInput
from postwire.api_gateway.ratelimit import HOUR, RequestRate, SendQuota
from postwire.api_gateway.routes import MESSAGE_ROUTES, RAW_ROUTES
from postwire.api_gateway.routes_dmarc import MAX_REPORT_BYTES, REPORTS_PATH
from postwire.core.sharedlimits import SharedBuckets
from postwire.db.accounts import NewCredentials

from .conftest import Gateway, Inbound, MakeAccount, StartGateway, offline_app

MAX_MESSAGE = 20_000
API_BODY_MAX = 4096


def _every_route() -> list[tuple[str, str]]:
    """(method, concrete path) of every route of the app, path parameters filled in."""
    out = []
    for ctx in iter_route_contexts(offline_app().routes):
        route = ctx.original_route
        if isinstance(route, APIRoute) and ctx.path is not None:
            path = re.sub(r"\{(\w+)\}", lambda m: "messageid" if m[1] == "kind" else "x", ctx.path)
            out += [(method, path) for method in sorted(route.methods)]
    return out


def _limit(path: str) -> int:
    if path == REPORTS_PATH:  # a DMARC report may be as large as the parser takes (10 MiB)
        return MAX_REPORT_BYTES
    if path in RAW_ROUTES:
        return MAX_MESSAGE
    if path in MESSAGE_ROUTES:
        return 2 * MAX_MESSAGE + 64 * 1024
    return API_BODY_MAX


@pytest.fixture
async def small_gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway(max_message_size=MAX_MESSAGE, api_body_max=API_BODY_MAX)


def _is_413(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "message_too_large" and "limit" in r.json()["message"]


async def test_every_route_refuses_a_body_over_its_limit(small_gateway: Gateway,
                                                         account: NewCredentials) -> None:
    routes = _every_route()
    assert ("POST", "/v1/webhooks/x/dead-letters/replay") in routes and len(routes) > 30
    for method, path in routes:
        body = b"x" * (_limit(path) + 1)  # refused on its declared Content-Length, before any reading
        r = await small_gateway.http.request(method, path, content=body, headers={
            **small_gateway.auth(account), "Content-Type": "application/json"})
        _is_413(r)


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 1024 + 1):
        yield b"{" + b" " * 1023


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/mime", "/v1/send", "/v1/resend",
                                  "/v1/suppressions", "/v1/domains", "/v1/webhooks"])
async def test_a_chunked_body_is_cut_off_at_the_limit(small_gateway: Gateway, account: NewCredentials,
                                                      inbound: Inbound, path: str) -> None:
    """No Content-Length: the body is counted as it arrives and refused once over the limit."""
    queued = await inbound.count()
    content_type = "message/rfc822" if path.endswith("/mime") else "application/json"
    r = await small_gateway.http.post(path, content=_chunks(_limit(path) + 1), headers={
        **small_gateway.auth(account), "Content-Type": content_type})
    _is_413(r)
    assert await inbound.count() == queued


async def test_bodies_under_the_limits_still_work(small_gateway: Gateway, account: NewCredentials) -> None:
    reason = "r" * 60
    r = await small_gateway.http.post("/v1/suppressions", json={"address": "a@example.com", "reason": reason},
                                      headers=small_gateway.auth(account))
    assert r.status_code == 201, r.text
    text = "x" * (MAX_MESSAGE - 2000)  # a JSON body larger than API_BODY_MAX is fine on a send route
    message = {"from": "a@example.com", "to": ["b@example.org"], "text": text}
    r = await small_gateway.http.post("/v1/messages", json=message, headers=small_gateway.auth(account))
    assert r.status_code == 202, r.text


# -------------------------------------------------------------------------------------- rate limit


def _is_429(r: httpx.Response, error: str) -> int:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == error and r.json()["message"]
    retry_after = int(r.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def _message(*to: str) -> dict[str, object]:
    return {"from": "a@example.com", "to": list(to), "subject": "s", "text": "t"}


async def test_request_rate_per_account(start_gateway: StartGateway, make_account: MakeAccount,
                                        inbound: Inbound) -> None:
    gw = await start_gateway(api_rate_per_s=0.1, api_burst=3)
    a, b = await make_account(), await make_account()
    for _ in range(3):
        assert (await gw.http.get("/v1/domains", headers=gw.auth(a))).status_code == 200
    retry_after = _is_429(await gw.http.get("/v1/domains", headers=gw.auth(a)), "rate_limited")
    assert retry_after <= 10  # one token at 0.1/s
    queued = await inbound.count()
    _is_429(await gw.http.post("/v1/messages", json=_message("x@example.org"), headers=gw.auth(a)),
            "rate_limited")
    _is_429(await gw.http.post("/v1/send", params={"access_token": a.api_key},
                               json={"recipient": "x@example.org", "from": "a@example.com", "text": "t"}),
            "rate_limited")
    assert await inbound.count() == queued  # nothing queued
    # another account is not affected, and a wrong key is still a 401 (it costs nobody a token)
    assert (await gw.http.get("/v1/domains", headers=gw.auth(b))).status_code == 200
    assert (await gw.http.post("/v1/messages", json=_message("x@example.org"),
                               headers=gw.auth(b))).status_code == 202
    assert (await gw.http.get("/v1/domains", headers={"Authorization": "Bearer pw_x_y"})).status_code == 401
    # the probes and the tracking links are not rate limited
    assert (await gw.http.get("/healthz")).status_code == 200


async def test_send_quota_counts_recipients(start_gateway: StartGateway, make_account: MakeAccount,
                                           inbound: Inbound) -> None:
    gw = await start_gateway(api_send_quota_per_hour=3)
    a, b = await make_account(), await make_account()
    first = await gw.http.post("/v1/messages", json=_message("1@example.org", "2@example.org"),
                               headers={**gw.auth(a), "Idempotency-Key": "quota-1"})
    assert first.status_code == 202, first.text
    queued = await inbound.count()
    over = await gw.http.post("/v1/send", headers=gw.auth(a), json={
        "recipients": ["3@example.org", "4@example.org"], "from": "a@example.com", "text": "t"})
    retry_after = _is_429(over, "send_quota_exceeded")
    assert retry_after <= HOUR / 3 + 1  # one recipient's worth of the hourly refill
    raw = b"From: a@example.com\r\nTo: 3@example.org, 4@example.org\r\nSubject: s\r\n\r\nt\r\n"
    _is_429(await gw.http.post("/v1/messages/mime", content=raw, headers={
        **gw.auth(a), "Content-Type": "message/rfc822"}), "send_quota_exceeded")
    assert await inbound.count() == queued  # nothing queued
    # what still fits goes through; an idempotent replay is free; another account is unaffected
    assert (await gw.http.post("/v1/messages", json=_message("3@example.org"),
                               headers=gw.auth(a))).status_code == 202
    replay = await gw.http.post("/v1/messages", json=_message("1@example.org", "2@example.org"),
                                headers={**gw.auth(a), "Idempotency-Key": "quota-1"})
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    _is_429(await gw.http.post("/v1/messages", json=_message("4@example.org"), headers=gw.auth(a)),
            "send_quota_exceeded")
    r = await gw.http.post("/v1/messages", json=_message("1@example.org", "2@example.org", "3@example.org"),
                           headers=gw.auth(b))
    assert r.status_code == 202, r.text
    # more recipients than the quota can ever hold: waiting would not help, so not a 429
    r = await gw.http.post("/v1/messages", json=_message(*(f"{i}@example.org" for i in range(4))),
                           headers=gw.auth(b))
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "too_many_recipients"


async def test_quota_and_rate_are_off_by_default(gateway: Gateway, account: NewCredentials) -> None:
    for _ in range(60):
        r = await gateway.http.get("/v1/domains", headers=gateway.auth(account))
        assert r.status_code == 200
    r = await gateway.http.post("/v1/messages", json=_message(*(f"{i}@example.org" for i in range(500))),
                                headers=gateway.auth(account))
    assert r.status_code == 202, r.text


# ------------------------------------------------------------------ the token buckets (one process)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    clock = FakeClock()
    buckets = SharedBuckets(None, "t", [(2.0, 4)], clock=clock)
    assert await buckets.take("a", 4) == 0
    assert await buckets.take("a", 1) == pytest.approx(0.5)
    assert await buckets.take("b", 4) == 0  # every key has its own bucket
    clock.now += 1.0
    assert await buckets.take("a", 3) == pytest.approx(0.5)  # 2 refilled; a refusal takes nothing
    assert await buckets.take("a", 2) == 0
    clock.now += 100
    assert await buckets.take("a", 5) == pytest.approx(0.5)  # capped at 4
    assert await buckets.take("a", 4) == 0


async def test_request_rate_answers_429_with_retry_after() -> None:
    clock = FakeClock()
    rate = RequestRate(rate_per_s=0.5, burst=2, clock=clock)
    await rate.check("a")
    await rate.check("a")
    with pytest.raises(ApiError) as e:
        await rate.check("a")
    assert (e.value.status_code, e.value.error) == (429, "rate_limited")
    assert e.value.headers == {"Retry-After": "2"}
    await rate.check("b")
    clock.now += 2
    await rate.check("a")
    await RequestRate(0, 1).check("a")  # 0: no limit


async def test_send_quota_hour_and_day_give_back_and_never_fitting() -> None:
    clock = FakeClock()
    quota = SendQuota(per_hour=10, per_day=15, clock=clock)
    await quota.take("a", 10)
    with pytest.raises(ApiError) as e:
        await quota.take("a", 1)
    assert e.value.status_code == 429 and e.value.error == "send_quota_exceeded"
    assert e.value.headers == {"Retry-After": "360"}  # one recipient of 10 per hour
    quota.give_back("a", 4)  # the queue refused 4 of them: they do not count
    await quota.take("a", 4)
    clock.now += HOUR
    await quota.take("a", 5)  # the hour refilled, the day has 15 - 10 - 5 + its refill left
    clock.now += 1
    with pytest.raises(ApiError) as e:
        await quota.take("a", 5)
    assert int(e.value.headers["Retry-After"]) > 3600  # now the day waits
    with pytest.raises(InvalidInput) as invalid:
        await quota.take("b", 11)
    assert invalid.value.errors[0].type == "too_many_recipients"
    await SendQuota(0, 0).take("a", 10**6)  # 0: unlimited
