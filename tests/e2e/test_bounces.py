"""Issue 4 end to end on the local run: a rejection and a DSN each become a classified event, a
suppression, a signed webhook POST, and the next send to the address is not attempted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiosmtplib
import httpx
import pytest
import pytest_asyncio

from postwire.testing.corpus import BOUNCE_MAILS, corpus_path
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink
from postwire.testing.stack import LocalStack
from postwire.testing.webhook_endpoint import Receiver, running_receiver
from postwire.webhook_notifier.webhook_signature import verify

pytestmark = pytest.mark.slow  # starts the whole system

# bounce mails written for the bounce service's tests (see the README there)
BOUNCE_FIXTURES = BOUNCE_MAILS


@pytest_asyncio.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as rec:
        yield rec


@pytest_asyncio.fixture(scope="module")
async def webhook_secret(stack: LocalStack, receiver: Receiver) -> str:
    async with _api(stack) as client:
        r = await client.post("/v1/webhooks", json={"url": receiver.url,
                                                     "event_types": []})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def _api(stack: LocalStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api,
                             headers={"Authorization": f"Bearer {stack.demo()['api_key']}"})


async def _send(stack: LocalStack, rcpt: str, subject: str) -> str:
    async with _api(stack) as client:
        r = await client.post("/v1/messages", json={"from": "sender@example.test", "to": [rcpt],
                                                    "subject": subject, "text": "hello"})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _events(stack: LocalStack, rcpt: str, type_: str) -> list[dict[str, Any]]:
    async with _api(stack) as client:
        r = await client.get("/v1/events", params={"recipient": rcpt, "type": type_})
    return list(r.json()["events"]) if r.status_code == 200 else []


async def _suppressed(stack: LocalStack, rcpt: str) -> dict[str, Any] | None:
    async with _api(stack) as client:
        r = await client.get(f"/v1/suppressions/{rcpt}")
    return dict(r.json()) if r.status_code == 200 else None


async def _assert_suppressed_next_time(stack: LocalStack, sink: SmtpSink, rcpt: str) -> None:
    attempts_before = sink.handler.rcpt_attempts[rcpt]
    await _send(stack, rcpt, "second try")
    [event] = await eventually(lambda: _events(stack, rcpt, "suppressed"))
    assert event["recipient"] == rcpt
    assert sink.handler.rcpt_attempts[rcpt] == attempts_before  # never attempted again


async def test_a_550_user_unknown_is_classified_suppressed_and_reported(
        stack: LocalStack, sink: SmtpSink, receiver: Receiver, webhook_secret: str) -> None:
    rcpt = "gone-user@dest.test"
    sink.handler.script(rcpt, "550 5.1.1 <gone-user@dest.test>: Recipient address rejected: User unknown")
    await _send(stack, rcpt, "first try")
    [failed] = await eventually(lambda: _events(stack, rcpt, "failed"))
    assert (failed["reason"], failed["hardbounce"], failed["smtp_code"]) == ("userunknown", True, 550)
    entry = await eventually(lambda: _suppressed(stack, rcpt))
    assert entry["reason"] == "userunknown" and entry["source"] == "bounce"
    [(event, body, sig)] = await eventually(lambda: receiver.events("failed", rcpt))
    assert verify(webhook_secret, body, sig)
    assert not verify(webhook_secret, body + b" ", sig)
    assert event["reason"] == "userunknown"
    await _assert_suppressed_next_time(stack, sink, rcpt)


def _postfix_dsn_fixture() -> tuple[bytes, str, str]:
    """A Postfix DSN written for the tests: (mail, the bounced address in it, the reason it gives)."""
    return (BOUNCE_FIXTURES / "postfix-userunknown.eml").read_bytes(), "jane.roe@example.org", "userunknown"


def _postfix_dsn_corpus() -> tuple[bytes, str, str]:
    """A real Postfix DSN (Sisimai's corpus) with its label; skips when the corpus is absent."""
    corpus = corpus_path("bounces")
    labels = [json.loads(line) for line in (corpus / "labels.jsonl").read_text().splitlines()]
    [label] = [x for x in labels if x["file"] == "eml/lhost-postfix-04.eml"]
    result = label["results"][0]
    return (corpus / label["file"]).read_bytes(), result["recipient"], result["reason"]


@pytest.mark.parametrize(("dsn_source", "rcpt"), [
    pytest.param(_postfix_dsn_fixture, "gone-mailbox@dest.test", id="postfix-userunknown"),
    pytest.param(_postfix_dsn_corpus, "gone-mailbox-2@dest.test", id="corpus-lhost-postfix-04"),
])
async def test_a_dsn_mailed_to_the_verp_address_is_a_bounce(
        stack: LocalStack, sink: SmtpSink, receiver: Receiver, webhook_secret: str,
        dsn_source: Callable[[], tuple[bytes, str, str]], rcpt: str) -> None:
    dsn, original, reason = dsn_source()
    mid = await _send(stack, rcpt, "will bounce later")
    [delivered] = await eventually(lambda: sink.handler.for_rcpt(rcpt))
    return_path = delivered.mail_from
    assert return_path.endswith("@bounces.e2e.test") and mid in return_path
    dsn = dsn.replace(original.encode(), rcpt.encode())  # readdressed to our recipient and return path
    async with aiosmtplib.SMTP(hostname=stack.host, port=stack.bounce_port, start_tls=False) as smtp:
        errors, _ = await smtp.sendmail("", [return_path], dsn)  # MAIL FROM:<>
        assert errors == {}
    [bounced] = await eventually(lambda: _events(stack, rcpt, "bounced"))
    assert bounced["message_id"] == mid and bounced["reason"] == reason
    assert bounced["hardbounce"] is True  # userunknown, 5.1.1
    [(event, body, sig)] = await eventually(lambda: receiver.events("bounced", rcpt))
    assert verify(webhook_secret, body, sig) and event["message_id"] == mid
    entry = await eventually(lambda: _suppressed(stack, rcpt))
    assert entry["reason"] == "userunknown"
    await _assert_suppressed_next_time(stack, sink, rcpt)


async def test_a_forged_return_path_is_refused(stack: LocalStack) -> None:
    async with aiosmtplib.SMTP(hostname=stack.host, port=stack.bounce_port, start_tls=False) as smtp:
        await smtp.mail("")
        code, text = await smtp.execute_command(b"RCPT TO:<pw1-01abcdefghjkmnpqrstvwxyz012-aaaaaaaaaa-"
                                                b"bbbbbbbbbbbbbbbb@bounces.e2e.test>")
    assert code == 550 and "5.7.1" in text
