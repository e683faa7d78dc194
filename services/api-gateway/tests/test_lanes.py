"""The message's lane (``stream``, docs/delivery.md) as the API sets it: the field, the header, the
defaults, and 422 for anything else; real HTTP, NATS and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from postwire.core.lanes import BULK, TRANSACTIONAL
from postwire.db.accounts import NewCredentials, set_api_key_stream
from postwire.db.engine import make_engine, make_sessionmaker

if TYPE_CHECKING:
    from .conftest import Gateway, Inbound


def message(to: list[str], **extra: Any) -> dict[str, Any]:
    return {"from": "shop@example.com", "to": to, "subject": "Hi", "text": "hello", **extra}


@pytest.mark.parametrize(("body", "stream"), [
    (message(["a@example.org"]), TRANSACTIONAL),
    (message(["a@example.org", "b@example.org"]), BULK),
    (message(["a@example.org"], headers={"List-Unsubscribe": "<mailto:u@example.com>"}), BULK),
    (message(["a@example.org", "b@example.org"], stream="transactional"), TRANSACTIONAL),
    (message(["a@example.org"], stream="bulk"), BULK),
])
async def test_messages_stream_field_and_defaults(gateway: Gateway, account: NewCredentials, inbound: Inbound,
                                                  body: dict[str, Any], stream: str) -> None:
    r = await gateway.http.post("/v1/messages", json=body, headers=gateway.auth(account))
    assert r.status_code == 202, r.text
    [env] = await inbound.read(account.account_id)
    assert env.stream == stream


async def test_an_unknown_stream_is_422(gateway: Gateway, account: NewCredentials, inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/messages", json=message(["a@example.org"], stream="newsletter"),
                                headers=gateway.auth(account))
    assert r.status_code == 422, r.text
    assert "stream" in r.text
    r = await gateway.http.post("/v1/send", params={"access_token": account.api_key},
                                json={"recipient": "a@example.org", "from": "shop@example.com",
                                      "subject": "Hi", "text": "x", "stream": "promo"})
    assert r.status_code == 422, r.text
    assert await inbound.count() == 0


async def test_raw_mime_header_chooses_the_lane_and_is_removed(gateway: Gateway, account: NewCredentials,
                                                               inbound: Inbound) -> None:
    raw = (b"From: shop@example.com\r\nTo: a@example.org, b@example.org\r\nSubject: Hi\r\n"
           b"X-Postwire-Stream: transactional\r\n\r\nhello\r\n")
    r = await gateway.http.post("/v1/messages/mime", content=raw,
                                headers={**gateway.auth(account), "Content-Type": "message/rfc822"})
    assert r.status_code == 202, r.text
    [env] = await inbound.read(account.account_id)
    assert env.stream == TRANSACTIONAL
    assert b"x-postwire-stream" not in env.body.inline.lower()


async def test_smtpeter_send_stream(gateway: Gateway, account: NewCredentials, inbound: Inbound) -> None:
    token = {"access_token": account.api_key}
    base = {"from": "shop@example.com", "subject": "Hi", "text": "x"}
    r = await gateway.http.post("/v1/send", params=token, json={**base, "recipient": "a@example.org"})
    assert r.status_code == 200, r.text
    r = await gateway.http.post("/v1/send", params=token,
                                json={**base, "recipients": ["a@example.org", "b@example.org"]})
    assert r.status_code == 200, r.text
    r = await gateway.http.post("/v1/send", params=token, data={**base, "recipient": "c@example.org",
                                                                "stream": "bulk"})
    assert r.status_code == 200, r.text
    envs = await inbound.read(account.account_id, 3)
    streams = {tuple(e.recipients): e.stream for e in envs}
    assert streams == {("a@example.org",): TRANSACTIONAL, ("a@example.org", "b@example.org"): BULK,
                       ("c@example.org",): BULK}


async def test_the_api_key_s_default_stream_applies_unless_the_send_names_one(
        gateway: Gateway, account: NewCredentials, inbound: Inbound, pg_url: str) -> None:
    key_id = account.api_key.removeprefix("pw_").partition("_")[0]
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            assert await set_api_key_stream(s, account.account_id, key_id, BULK)
            assert not await set_api_key_stream(s, "someone-else", key_id, BULK)
    finally:
        await engine.dispose()
    r = await gateway.http.post("/v1/messages", json=message(["a@example.org"]),
                                headers=gateway.auth(account))
    assert r.status_code == 202, r.text
    r = await gateway.http.post("/v1/messages", json=message(["a@example.org"], stream="transactional"),
                                headers=gateway.auth(account))
    assert r.status_code == 202, r.text
    first, second = await inbound.read(account.account_id, 2)
    assert (first.stream, second.stream) == (BULK, TRANSACTIONAL)
