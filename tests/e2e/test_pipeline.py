"""End to end: submit over SMTP and the API, deliver through the real services to a loopback MX."""

from __future__ import annotations

import base64
import os
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest

from postwire.testing.fixtures import eventually
from postwire.testing.smtp import Received, SmtpSink
from postwire.testing.stack import LocalStack

pytestmark = pytest.mark.slow  # starts the whole system

HTML = """<html><head><style>
p.lead { color: #ff0000; font-size: 18px; }
@media (max-width: 600px) { p.lead { font-size: 14px; } }
</style></head><body><p class="lead">Hello</p></body></html>"""


def _html_mail(to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["X-Custom-Trace"] = "abc-123"
    msg.set_content("plain text part")
    msg.add_alternative(HTML, subtype="html")
    msg.add_attachment(b"%PDF-1.4 fake\x00\x01\x02", maintype="application", subtype="pdf",
                       filename="doc.pdf")
    return msg


def _html_part(received: Received) -> str:
    msg = received.message()
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def _attachment(received: Received) -> bytes:
    for part in received.message().iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload
    raise AssertionError("no attachment")


async def _arrived(sink: SmtpSink, rcpt: str) -> list[Received]:
    return sink.handler.for_rcpt(rcpt)


async def _smtp_send(stack: LocalStack, msg: EmailMessage | bytes, rcpts: list[str]) -> tuple[int, str]:
    demo = stack.demo()
    async with aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False) as smtp:
        await smtp.login(demo["smtp_username"], demo["smtp_password"])
        raw = msg if isinstance(msg, bytes) else msg.as_bytes()
        errors, reply = await smtp.sendmail("sender@example.test", rcpts, raw)
        assert errors == {}
        return 250, reply


def _auth(stack: LocalStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.demo()['api_key']}"}


async def _status(stack: LocalStack, message_id: str, rcpt: str) -> dict[str, object] | None:
    async with httpx.AsyncClient(base_url=stack.api, headers=_auth(stack)) as client:
        r = await client.get(f"/v1/messages/{message_id}")
    if r.status_code != 200:
        return None
    for entry in r.json()["recipients"]:
        if entry["email"] == rcpt:
            return dict(entry)
    return None


async def test_smtp_html_mail_arrives_with_inlined_css_and_unchanged_parts(stack, sink) -> None:
    rcpt = "smtp-user@dest.test"
    await _smtp_send(stack, _html_mail(rcpt, "SMTP inline test"), [rcpt])
    [got] = await eventually(lambda: _arrived(sink, rcpt))
    html = _html_part(got)
    assert 'style="color: #ff0000; font-size: 18px' in html or "color:#ff0000" in html.replace(" ", "")
    assert "@media (max-width: 600px)" in html  # at-rules stay in <style> for mobile clients
    msg = got.message()
    assert msg["Subject"] == "SMTP inline test" and msg["X-Custom-Trace"] == "abc-123"
    assert _attachment(got) == b"%PDF-1.4 fake\x00\x01\x02"


async def test_api_html_mail_arrives_with_inlined_css_and_attachment(stack, sink) -> None:
    rcpt, bcc = "api-user@dest.test", "api-bcc@dest.test"
    body = {
        "from": "Sender <sender@example.test>", "to": [rcpt], "bcc": [bcc], "subject": "API inline test",
        "text": "plain", "html": HTML, "headers": {"X-Custom-Trace": "xyz-9"},
        "attachments": [{"filename": "a.bin", "content_type": "application/octet-stream",
                         "content": base64.b64encode(b"\x00\xffbinary").decode()}],
        "tags": ["welcome"], "metadata": {"user": "42"}, "options": {"inline_css": True},
    }
    async with httpx.AsyncClient(base_url=stack.api, headers=_auth(stack)) as client:
        r = await client.post("/v1/messages", json=body)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert {x["email"] for x in answer["recipients"]} == {rcpt, bcc}
    assert all(x["status"] == "queued" for x in answer["recipients"])
    [got] = await eventually(lambda: _arrived(sink, rcpt))
    assert "color: #ff0000" in _html_part(got) or "color:#ff0000" in _html_part(got)
    assert got.message()["X-Custom-Trace"] == "xyz-9"
    assert got.message()["Bcc"] is None
    assert _attachment(got) == b"\x00\xffbinary"
    await eventually(lambda: _arrived(sink, bcc))
    status = await eventually(lambda: _status(stack, answer["id"], rcpt))
    await eventually(lambda: _delivered(stack, answer["id"], rcpt))
    assert status is not None


async def _delivered(stack: LocalStack, mid: str, rcpt: str) -> dict[str, object] | None:
    s = await _status(stack, mid, rcpt)
    return s if s and s["status"] == "delivered" else None


async def test_a_20_mb_message_arrives_intact(stack, sink) -> None:
    rcpt = "big@dest.test"
    msg = _html_mail(rcpt, "big one")
    blob = os.urandom(15 * 1024 * 1024)  # base64 makes the whole message over 20 MB
    msg.add_attachment(blob, maintype="application", subtype="octet-stream", filename="big.bin")
    raw = msg.as_bytes()
    assert len(raw) > 20_000_000
    await _smtp_send(stack, raw, [rcpt])
    [got] = await eventually(lambda: _arrived(sink, rcpt), timeout=120)
    parts = [p.get_payload(decode=True) for p in got.message().iter_attachments()]
    assert blob in parts


async def test_451_is_retried_then_delivered(stack, sink) -> None:
    rcpt = "retry@dest.test"
    sink.handler.script(rcpt, "451 4.3.0 Please try again later")
    async with httpx.AsyncClient(base_url=stack.api, headers=_auth(stack)) as client:
        r = await client.post("/v1/messages", json={"from": "sender@example.test", "to": [rcpt],
                                                    "subject": "retry", "text": "hi"})
    assert r.status_code == 202
    mid = r.json()["id"]
    await eventually(lambda: _arrived(sink, rcpt), timeout=60)
    status = await eventually(lambda: _delivered(stack, mid, rcpt))
    assert status["attempts"] == 2
    assert sink.handler.rcpt_attempts[rcpt] == 2


async def test_550_fails_the_recipient_with_the_remote_reply(stack, sink) -> None:
    rcpt = "nobody@dest.test"
    sink.handler.script(rcpt, "550 5.1.1 No such user here")
    async with httpx.AsyncClient(base_url=stack.api, headers=_auth(stack)) as client:
        r = await client.post("/v1/messages", json={"from": "sender@example.test", "to": [rcpt],
                                                    "subject": "fail", "text": "hi"})
    mid = r.json()["id"]

    async def failed() -> dict[str, object] | None:
        s = await _status(stack, mid, rcpt)
        return s if s and s["status"] == "failed" else None

    status = await eventually(failed)
    assert status["smtp_code"] == 550
    assert "No such user here" in str(status["response"])
    assert sink.handler.for_rcpt(rcpt) == []


async def test_wrong_credentials_are_refused(stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api) as client:
        r = await client.post("/v1/messages", headers={"Authorization": "Bearer pw_nope_nope"},
                              json={"from": "a@example.test", "to": ["b@dest.test"], "text": "x"})
    assert r.status_code == 401
    smtp = aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False)
    await smtp.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
        await smtp.login(stack.demo()["smtp_username"], "wrong-password")
    assert err.value.code == 535
    await smtp.quit()
