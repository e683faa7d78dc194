"""POST /v1/messages and /v1/messages/mime against real NATS and PostgreSQL, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import email
import json
import os
from email import policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from postwire.core.bodies import BodyStore
from postwire.db.accounts import NewCredentials

if TYPE_CHECKING:
    from .conftest import Gateway, Inbound, MakeAccount, StartGateway

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "Sender Name <sender@example.com>",
        "to": ["alice@example.org", "Bob <bob@example.net>"],
        "cc": ["carol@example.org"],
        "bcc": ["hidden@example.com"],
        "reply_to": "replies@example.com",
        "subject": "Hello from the API",
        "text": "plain text body",
        "html": "<html><head><style>p{color:red}</style></head><body><p>hi</p></body></html>",
        "headers": {"X-Campaign": "spring-2026", "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": [{"filename": "report.pdf", "content_type": "application/pdf",
                         "content": base64.b64encode(PDF).decode()}],
        "tags": ["welcome"],
        "metadata": {"user_id": "42"},
        "options": {"inline_css": False, "css_engine": "premailer"},
    }
    body.update(overrides)
    return body


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_json_message_is_queued_with_envelope_and_mime(gateway: Gateway, account: NewCredentials,
                                                             inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/messages", json=payload(), headers=gateway.auth(account))

    assert r.status_code == 202, r.text
    answer = r.json()
    assert [x["email"] for x in answer["recipients"]] == [
        "alice@example.org", "bob@example.net", "carol@example.org", "hidden@example.com"]
    assert {x["status"] for x in answer["recipients"]} == {"queued"}
    [env] = await inbound.read(account.account_id)
    assert env.message_id == answer["id"]
    assert env.account_id == account.account_id
    assert env.mail_from == "sender@example.com"
    assert list(env.recipients) == [x["email"] for x in answer["recipients"]]
    assert env.source == "api" and env.subject == "Hello from the API"
    assert list(env.tags) == ["welcome"] and dict(env.metadata) == {"user_id": "42"}
    assert env.options.inline_css is False and env.options.css_engine == "premailer"
    assert env.body.WhichOneof("location") == "inline"
    msg = parse(env.body.inline)
    assert "Bcc" not in msg and b"hidden@example.com" not in env.body.inline
    assert msg["From"].addresses[0].display_name == "Sender Name"
    assert str(msg["To"]) == "alice@example.org, Bob <bob@example.net>"
    assert str(msg["Reply-To"]) == "replies@example.com"
    assert msg["X-Campaign"] == "spring-2026"
    assert msg["Message-ID"] == f"<{answer['id']}@api.postwire.test>"
    assert msg["Date"] is not None
    assert msg.get_body(("plain",)).get_content().strip() == "plain text body"  # type: ignore[union-attr]
    assert "<style>" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == "report.pdf" and att.get_content_type() == "application/pdf"
    assert att.get_content() == PDF


async def test_large_body_goes_to_object_store(start_gateway: StartGateway, account: NewCredentials,
                                               inbound: Inbound) -> None:
    gateway = await start_gateway(inline_body_max=4096)
    blob = os.urandom(300_000)
    body = payload(attachments=[{"filename": "big.bin", "content": base64.b64encode(blob).decode()}])

    r = await gateway.http.post("/v1/messages", json=body, headers=gateway.auth(account))

    assert r.status_code == 202, r.text
    [env] = await inbound.read(account.account_id)
    assert env.body.WhichOneof("location") == "object_name"
    raw = await BodyStore(inbound.js, 4096).get(env.body)
    assert len(raw) == env.body.size
    [att] = list(parse(raw).iter_attachments())
    assert att.get_content() == blob


async def test_html_only_message(gateway: Gateway, account: NewCredentials, inbound: Inbound) -> None:
    body = payload(text=None, attachments=[], cc=[], bcc=[])
    r = await gateway.http.post("/v1/messages", json=body, headers=gateway.auth(account))
    assert r.status_code == 202, r.text
    [env] = await inbound.read(account.account_id)
    msg = parse(env.body.inline)
    assert msg.get_content_type() == "text/html"
    assert env.options.inline_css is False


async def test_idempotency_key_replays_first_answer(gateway: Gateway, account: NewCredentials,
                                                    inbound: Inbound) -> None:
    headers = gateway.auth(account, **{"Idempotency-Key": "order-1234"})
    first = await gateway.http.post("/v1/messages", json=payload(), headers=headers)
    # same request, different key order and whitespace: still the same request
    again = await gateway.http.post("/v1/messages", content=_reordered_json(payload()),
                                    headers={**headers, "Content-Type": "application/json"})

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await inbound.count() == 1

    other = await gateway.http.post("/v1/messages", json=payload(subject="changed"), headers=headers)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    assert await inbound.count() == 1


async def test_concurrent_requests_with_one_key_send_once(gateway: Gateway, account: NewCredentials,
                                                          inbound: Inbound) -> None:
    headers = gateway.auth(account, **{"Idempotency-Key": "race"})
    answers = await asyncio.gather(*(gateway.http.post("/v1/messages", json=payload(), headers=headers)
                                     for _ in range(5)))

    ok = [a for a in answers if a.status_code == 202]
    assert ok and all(a.status_code in (202, 409) for a in answers)
    assert len({a.json()["id"] for a in ok}) == 1
    assert all(a.headers["Retry-After"] for a in answers if a.status_code == 409)
    assert await inbound.count() == 1


async def test_keys_are_per_account(gateway: Gateway, account: NewCredentials, make_account: MakeAccount,
                                    inbound: Inbound) -> None:
    other = await make_account()
    a = await gateway.http.post("/v1/messages", json=payload(), headers=gateway.auth(account, **{
        "Idempotency-Key": "shared"}))
    b = await gateway.http.post("/v1/messages", json=payload(), headers=gateway.auth(other, **{
        "Idempotency-Key": "shared"}))
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]
    assert await inbound.count() == 2


def _reordered_json(body: dict[str, Any]) -> bytes:
    return json.dumps(dict(reversed(list(body.items()))), indent=2).encode()


RAW = (b"From: Ann <ann@example.com>\n"
       b"To: to1@example.org\n"
       b"Cc: Cee <cc1@example.org>\n"
       b"Bcc: secret1@example.com,\n secret2@example.com\n"
       b"Subject: raw one\n"
       b"MIME-Version: 1.0\n"
       b"Content-Type: text/plain; charset=utf-8\n"
       b"\n"
       b"line one\n"
       b"Bcc: this line is body, not a header\n")


async def test_mime_message_strips_bcc_and_adds_ids(gateway: Gateway, account: NewCredentials,
                                                    inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/messages/mime", content=RAW,
                                headers=gateway.auth(account, **{"Content-Type": "message/rfc822"}))

    assert r.status_code == 202, r.text
    answer = r.json()
    assert [x["email"] for x in answer["recipients"]] == [
        "to1@example.org", "cc1@example.org", "secret1@example.com", "secret2@example.com"]
    [env] = await inbound.read(account.account_id)
    assert env.mail_from == "ann@example.com" and env.subject == "raw one"
    raw = env.body.inline
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"secret" not in head and b"Bcc" not in head
    assert body == b"line one\r\nBcc: this line is body, not a header\r\n"
    msg = parse(raw)
    assert msg["Message-ID"] == f"<{answer['id']}@api.postwire.test>"
    assert msg["Date"] is not None and msg["To"] == "to1@example.org"


async def test_mime_query_overrides_envelope(gateway: Gateway, account: NewCredentials,
                                             inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/messages/mime", params={"from": "bounce@example.com",
                                                             "to": ["x@example.org", "y@example.org"]},
                                content=RAW, headers=gateway.auth(account, **{"Content-Type": "text/plain"}))

    assert r.status_code == 202, r.text
    assert [x["email"] for x in r.json()["recipients"]] == ["x@example.org", "y@example.org"]
    [env] = await inbound.read(account.account_id)
    assert env.mail_from == "bounce@example.com"
    assert b"secret" not in env.body.inline  # Bcc is stripped even when the envelope comes from the query
