"""Bad input, bad credentials, oversize messages and a stopped NATS: a clear error, nothing queued."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pytest

from postwire.db.accounts import NewCredentials
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer

if TYPE_CHECKING:
    from .conftest import Gateway, Inbound, StartGateway

GOOD: dict[str, Any] = {"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != field}


INVALID = [
    pytest.param(without("from"), ["body"], "missing_from", id="missing-from"),  # optional with a template
    pytest.param(without("to"), ["body"], "missing_recipients", id="no-recipients"),
    pytest.param(without("text"), ["body"], "missing_body", id="no-text-or-html"),
    pytest.param({**GOOD, "to": ["not-an-address"]}, ["body", "to", 0], "invalid_address", id="bad-to"),
    pytest.param({**GOOD, "cc": ["x@example.org", "bad@@example.org"]}, ["body", "cc", 1], "invalid_address",
                 id="bad-cc"),
    pytest.param({**GOOD, "from": "Name <nobody@>"}, ["body", "from"], "invalid_address", id="bad-from"),
    pytest.param({**GOOD, "subject": "hi\r\nBcc: victim@example.com"}, ["body", "subject"],
                 "header_injection", id="crlf-subject"),
    pytest.param({**GOOD, "from": "Evil\nBcc: v@example.com <a@example.com>"}, ["body", "from"],
                 "header_injection", id="crlf-from"),
    pytest.param({**GOOD, "headers": {"X-Tag": "a\nBcc: v@example.com"}}, ["body", "headers"],
                 "header_injection", id="crlf-header-value"),
    pytest.param({**GOOD, "headers": {"X-Bad\r\nBcc": "v"}}, ["body", "headers"], "invalid_header_name",
                 id="crlf-header-name"),
    pytest.param({**GOOD, "headers": {"bcc": "v@example.com"}}, ["body", "headers"], "reserved_header",
                 id="reserved-header"),
    pytest.param({**GOOD, "attachments": [{"filename": "a.txt", "content": "not base64!"}]},
                 ["body", "attachments", 0, "content"], "invalid_base64", id="bad-base64"),
    pytest.param({**GOOD, "attachments": [{"filename": "a\r\n.txt", "content": "AAAA"}]},
                 ["body", "attachments", 0, "filename"], "header_injection", id="crlf-filename"),
    pytest.param({**GOOD, "options": {"css_engine": "nope"}}, ["body", "options", "css_engine"],
                 "literal_error", id="bad-engine"),
    pytest.param({**GOOD, "attachements": []}, ["body", "attachements"], "extra_forbidden", id="typo-field"),
]


@pytest.mark.parametrize(("body", "loc", "kind"), INVALID)
async def test_invalid_json_fields_are_422_naming_the_field(gateway: Gateway, account: NewCredentials,
                                                             inbound: Inbound, body: dict[str, Any],
                                                             loc: list[Any], kind: str) -> None:
    r = await gateway.http.post("/v1/messages", json=body, headers=gateway.auth(account))

    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer["error"] == "validation_error"
    assert [(e["loc"], e["type"]) for e in answer["detail"]] == [(loc, kind)]
    assert ".".join(map(str, loc)) in answer["message"]
    assert "input" not in answer["detail"][0]
    assert await inbound.count() == 0


async def test_malformed_json_is_422(gateway: Gateway, account: NewCredentials, inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/messages", content=b'{"from": "a@example.com",',
                                headers=gateway.auth(account, **{"Content-Type": "application/json"}))

    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert "invalid JSON" in r.json()["message"]
    assert await inbound.count() == 0


@pytest.mark.parametrize("authorization", [None, "Bearer pw_nope_nope", "Bearer garbage", "Basic dXNlcg=="])
async def test_missing_or_wrong_api_key_is_401(gateway: Gateway, inbound: Inbound,
                                               authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for r in (await gateway.http.post("/v1/messages", json=GOOD, headers=headers),
              await gateway.http.get("/v1/messages/0123", headers=headers)):
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["error"] == "unauthorized"
    assert await inbound.count() == 0


async def test_oversize_message_is_413(start_gateway: StartGateway, account: NewCredentials,
                                       inbound: Inbound) -> None:
    gateway = await start_gateway(max_message_size=20_000)

    def with_attachment(size: int) -> dict[str, Any]:
        content = base64.b64encode(b"x" * size).decode()
        return {**GOOD, "attachments": [{"filename": "a.bin", "content": content}]}

    built = await gateway.http.post("/v1/messages", json=with_attachment(16_000),
                                    headers=gateway.auth(account))
    request = await gateway.http.post("/v1/messages", json=with_attachment(100_000),
                                      headers=gateway.auth(account))
    raw = await gateway.http.post("/v1/messages/mime", content=b"From: a@example.com\r\n\r\n" + b"x" * 30_000,
                                  headers=gateway.auth(account, **{"Content-Type": "message/rfc822"}))

    for r in (built, request, raw):
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "message_too_large"
    assert await inbound.count() == 0


MIME_INVALID = [
    pytest.param(b"just some text without headers\r\n", {}, ["body"], "invalid_mime", id="not-mime"),
    pytest.param(b"To: b@example.org\r\n\r\nhi\r\n", {}, ["body", "From"], "invalid_address", id="no-from"),
    pytest.param(b"From: a@example.com\r\n\r\nhi\r\n", {}, ["body"], "missing_recipients", id="no-rcpt"),
    pytest.param(b"From: a@example.com\r\nTo: broken@\r\n\r\nhi\r\n", {}, ["body", "To"], "invalid_address",
                 id="bad-to-header"),
    pytest.param(b"From: a@example.com\r\n\r\nhi\r\n", {"to": ["ok@example.org", "bad"]}, ["query", "to", 1],
                 "invalid_address", id="bad-to-query"),
]


@pytest.mark.parametrize(("raw", "params", "loc", "kind"), MIME_INVALID)
async def test_invalid_mime_is_422(gateway: Gateway, account: NewCredentials, inbound: Inbound, raw: bytes,
                                   params: dict[str, Any], loc: list[Any], kind: str) -> None:
    r = await gateway.http.post("/v1/messages/mime", content=raw, params=params,
                                headers=gateway.auth(account, **{"Content-Type": "message/rfc822"}))

    assert r.status_code == 422, r.text
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [(loc, kind)]
    assert await inbound.count() == 0


async def test_mime_with_json_content_type_is_415(gateway: Gateway, account: NewCredentials) -> None:
    r = await gateway.http.post("/v1/messages/mime", json=GOOD, headers=gateway.auth(account))
    assert r.status_code == 415
    assert r.json()["error"] == "unsupported_media_type"


async def test_queue_down_is_503_and_nothing_is_accepted(start_gateway: StartGateway, nats_server: NatsServer,
                                                         account: NewCredentials, inbound: Inbound) -> None:
    gateway = await start_gateway(publish_timeout_s=1.0)
    headers = gateway.auth(account, **{"Idempotency-Key": "during-outage"})
    await nats_server.stop()
    await eventually(lambda: _not_ready(gateway))

    json_answer = await gateway.http.post("/v1/messages", json=GOOD, headers=headers)
    mime_answer = await gateway.http.post("/v1/messages/mime", content=b"From: a@example.com\r\n"
                                          b"To: b@example.org\r\n\r\nhi\r\n",
                                          headers=gateway.auth(account, **{"Content-Type": "message/rfc822"}))

    for r in (json_answer, mime_answer):
        assert r.status_code == 503
        assert r.json()["error"] == "queue_unavailable"
        assert int(r.headers["Retry-After"]) > 0
    await nats_server.start()
    await eventually(lambda: _ready(gateway))
    assert await inbound.count() == 0
    # the key of a 503 is not burnt: the retry sends, once
    retry = await gateway.http.post("/v1/messages", json=GOOD, headers=headers)
    assert retry.status_code == 202, retry.text
    assert await inbound.count() == 1


async def _not_ready(gateway: Gateway) -> bool:
    return (await gateway.http.get("/readyz")).status_code == 503


async def _ready(gateway: Gateway) -> bool:
    return (await gateway.http.get("/readyz")).status_code == 200


async def test_malformed_idempotency_key_is_422(gateway: Gateway, account: NewCredentials,
                                                inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/messages", json=GOOD,
                                headers=gateway.auth(account, **{"Idempotency-Key": "x" * 256}))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await inbound.count() == 0
