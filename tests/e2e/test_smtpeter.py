"""Issue 6 on the local run: a client written from SMTPeter's documentation works unchanged.

Requests use SMTPeter's shapes (`?access_token=`, /v1/send with JSON or a form, x-smtpeter-* headers over
SMTP, /v1/events/{messageid|email|tags}/…); the mail arrives at a loopback MX, and the tracking links in
it are followed over real HTTP like a recipient's mail client would.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiosmtplib
import httpx
import pytest
import pytest_asyncio

from postwire.testing.fixtures import eventually
from postwire.testing.smtp import Received, SmtpSink
from postwire.testing.stack import LocalStack
from postwire.testing.webhook_endpoint import Receiver, running_receiver
from postwire.webhook_notifier.webhook_signature import verify

pytestmark = pytest.mark.slow  # starts the whole system

STYLED = ('<html><head><style>p.lead { color: #ff0000; }</style></head><body><p class="lead">Spring sale</p>'
          '<a href="https://shop.example/sale?utm=1&amp;x=2">See the sale</a>'
          '<a href="https://bank.example/login">https://bank.example/login</a></body></html>')
TRACK_LINK = re.compile(r'href="(http://127\.0\.0\.1:\d+/t/c/[A-Za-z0-9_-]+)"')
PIXEL = re.compile(r'src="(http://127\.0\.0\.1:\d+/t/o/[A-Za-z0-9_-]+)"')


@pytest_asyncio.fixture(scope="module")
async def hooks(stack: LocalStack) -> AsyncIterator[tuple[Receiver, str]]:
    """A webhook endpoint subscribed to opens and clicks, and its signing secret."""
    async with running_receiver() as rec:
        async with _client(stack) as client:
            r = await client.post("/v1/webhooks", json={"url": rec.url, "event_types": ["opened", "clicked"]})
        assert r.status_code == 201, r.text
        yield rec, str(r.json()["secret"])


def _client(stack: LocalStack) -> httpx.AsyncClient:
    """SMTPeter's way of authenticating: the token in the query string, no header at all."""
    return httpx.AsyncClient(base_url=stack.api, params={"access_token": stack.demo()["api_key"]})


async def _send(stack: LocalStack, **request: Any) -> dict[str, str]:
    async with _client(stack) as client:
        r = await client.post("/v1/send", json=request)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _events(stack: LocalStack, kind: str, value: str) -> list[dict[str, Any]]:
    async with _client(stack) as client:
        r = await client.get(f"/v1/events/{kind}/{value}")
    assert r.status_code == 200, r.text
    return list(r.json())


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["event"] == name]


def _html(received: Received) -> str:
    part = received.message().get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def _only(sink: SmtpSink, rcpt: str) -> Received:
    [received] = await eventually(lambda: sink.handler.for_rcpt(rcpt))
    return received


async def test_send_with_fields_inlines_tracks_and_reports_clicks_and_opens(
        stack: LocalStack, sink: SmtpSink, hooks: tuple[Receiver, str]) -> None:
    receiver, secret = hooks
    rcpt = "reader@dest.test"
    answer = await _send(stack, recipient=rcpt, **{"from": "Shop <news@example.test>"}, to=rcpt,
                         subject="Spring", html=STYLED, text="Spring sale", inlinecss=True, trackopens=True,
                         preventscam=True, tags=["spring"], extra={"x-campaign": "c-42"})
    [(message_id, to)] = answer.items()
    assert to == rcpt

    received = await _only(sink, rcpt)
    html = _html(received)
    assert 'style="color: #ff0000' in html.replace("color:#ff0000", "color: #ff0000")  # inlined
    assert "https://shop.example/sale" not in html  # tracked (trackclicks defaults to true)
    assert '<a href="https://bank.example/login">https://bank.example/login</a>' in html  # preventscam
    assert received.message()["X-Campaign"] == "c-42"
    [click_url] = TRACK_LINK.findall(html)
    [pixel_url] = PIXEL.findall(html)

    async with httpx.AsyncClient() as browser:
        click = await browser.get(click_url, headers={"User-Agent": "Thunderbird/128"})
        pixel = await browser.get(pixel_url)
        tampered = await browser.get(click_url[:-3] + ("AAA" if not click_url.endswith("AAA") else "BBB"))
    assert click.status_code == 302
    assert click.headers["location"] == "https://shop.example/sale?utm=1&x=2"
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert tampered.status_code == 404 and "location" not in tampered.headers

    events = await eventually(lambda: _both(stack, message_id))
    [clicked] = _named(events, "click")
    assert (clicked["url"], clicked["recipient"], clicked["unique"]) == ("https://shop.example/sale?utm=1&x=2",
                                                                       rcpt, True)
    assert clicked["useragent"] == "Thunderbird/128"
    assert _named(events, "open")[0]["unique"] is True
    assert _named(events, "delivery")[0]["id"] == message_id
    [(event, body, sig)] = await eventually(lambda: receiver.events("clicked", rcpt))
    assert verify(secret, body, sig)
    assert event["url"] == "https://shop.example/sale?utm=1&x=2"
    assert await eventually(lambda: receiver.events("opened", rcpt))

    async with _client(stack) as client:
        stats = (await client.get("/v1/stats/spring")).json()
    totals = stats["totals"]
    counts = (totals["clicks"], totals["unique_clicks"], totals["opens"], totals["unique_opens"])
    assert counts == (1, 1, 1, 1)


async def _both(stack: LocalStack, message_id: str) -> list[dict[str, Any]]:
    """The message's events once its delivery, click and open are all recorded."""
    events = await _events(stack, "messageid", message_id)
    names = {e["event"] for e in events}
    return events if {"delivery", "click", "open"} <= names else []


async def test_form_encoded_send_gives_each_recipient_its_own_id(stack: LocalStack, sink: SmtpSink) -> None:
    rcpts = ["form-a@dest.test", "form-b@dest.test"]
    form = [("recipients[]", rcpts[0]), ("recipients[]", rcpts[1]), ("from", "news@example.test"),
            ("subject", "Form"), ("text", "Sent as a form"), ("tags", "formtag")]
    async with _client(stack) as client:
        r = await client.post("/v1/send", content=urlencode(form),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert sorted(answer.values()) == rcpts and len(set(answer)) == 2
    for rcpt in rcpts:
        assert (await _only(sink, rcpt)).message().get_content().strip() == "Sent as a form"
    by_rcpt = {v: k for k, v in answer.items()}
    for rcpt in rcpts:
        events = await eventually(lambda r=rcpt: _named_when(stack, by_rcpt[r], "delivery"))
        assert events[0]["recipient"] == rcpt
    tagged = await eventually(lambda: _tagged(stack, "formtag", 2))
    assert {d["recipient"] for d in tagged} == set(rcpts)


async def _named_when(stack: LocalStack, message_id: str, name: str) -> list[dict[str, Any]]:
    return _named(await _events(stack, "messageid", message_id), name)


async def _tagged(stack: LocalStack, tag: str, count: int) -> list[dict[str, Any]]:
    found = _named(await _events(stack, "tags", tag), "delivery")
    return found if len(found) >= count else []


async def test_send_mime_honours_option_headers_and_strips_them(stack: LocalStack, sink: SmtpSink) -> None:
    rcpt = "mime-mode@dest.test"
    mime = ("From: news@example.test\r\nTo: mime-mode@dest.test\r\nSubject: Mime\r\n"
            "x-smtpeter-trackclicks: false\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            "\r\n<html><body><a href=\"https://shop.example/mime\">link</a></body></html>\r\n")
    answer = await _send(stack, recipient=rcpt, mime=mime)
    assert list(answer.values()) == [rcpt]
    received = await _only(sink, rcpt)
    assert 'href="https://shop.example/mime"' in _html(received)  # the header turned tracking off
    assert not any(k.lower().startswith("x-smtpeter") for k in received.message())


async def test_smtp_headers_override_the_login_and_never_reach_the_recipient(
        stack: LocalStack, sink: SmtpSink) -> None:
    rcpt = "smtp-opts@dest.test"
    raw = (b"From: news@example.test\r\nTo: smtp-opts@dest.test\r\nSubject: Over SMTP\r\n"
           b"x-smtpeter-trackclicks: true\r\nX-Postwire-Tags: smtptag\r\nx-smtpeter-inlinecss: false\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><head><style>p{color:red}</style></head><body><p>x</p>"
           b"<a href=\"https://shop.example/smtp\">go</a></body></html>\r\n")
    demo = stack.demo()
    async with aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False) as smtp:
        await smtp.login(demo["smtp_username"], demo["smtp_password"])
        await smtp.sendmail("news@example.test", [rcpt], raw)
    received = await _only(sink, rcpt)
    html = _html(received)
    assert TRACK_LINK.search(html) and "https://shop.example/smtp" not in html  # login default was off
    assert "<style>" in html and '<p style' not in html  # inlining switched off for this message
    assert not any(k.lower().startswith(("x-smtpeter", "x-postwire")) for k in received.message())
    [delivery] = await eventually(lambda: _named_when_email(stack, rcpt, "delivery"))
    assert delivery["tags"] == "smtptag"


async def _named_when_email(stack: LocalStack, rcpt: str, name: str) -> list[dict[str, Any]]:
    return _named(await _events(stack, "email", rcpt), name)


async def test_smtp_dsn_parameters_and_null_sender_are_carried(stack: LocalStack, sink: SmtpSink) -> None:
    rcpt = "dsn-params@dest.test"
    demo = stack.demo()
    async with aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False) as smtp:
        await smtp.login(demo["smtp_username"], demo["smtp_password"])
        assert "dsn" in smtp.esmtp_extensions
        await smtp.sendmail("", [rcpt], b"From: news@example.test\r\nSubject: DSN\r\n\r\nbody\r\n",
                            mail_options=["RET=HDRS", "ENVID=Batch+2B7"],
                            rcpt_options=["NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;{rcpt}"])
    received = await _only(sink, rcpt)
    assert received.mail_from in ("", "<>")  # a null sender stays null: no VERP, no bounce loop
    async with _client(stack) as client:
        accepted = await eventually(lambda: _accepted(client, rcpt))
    data = accepted
    assert data["dsn"] == {"ret": "HDRS", "envid": "Batch+7"}
    assert (data["notify"], data["orcpt"]) == (["FAILURE", "DELAY"], f"rfc822;{rcpt}")


async def _accepted(client: httpx.AsyncClient, rcpt: str) -> dict[str, Any] | None:
    r = await client.get("/v1/events", params={"type": "accepted", "recipient": rcpt})
    events = r.json()["events"] if r.status_code == 200 else []
    return dict(events[0]) if events else None


async def test_past_maxdelivertime_is_a_failure_with_reason_expired(stack: LocalStack,
                                                                   sink: SmtpSink) -> None:
    rcpt = "too-late@dest.test"
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    answer = await _send(stack, recipient=rcpt, **{"from": "news@example.test"}, subject="Late", text="x",
                         maxdelivertime=past)
    [(message_id, _)] = answer.items()
    [failure] = await eventually(lambda: _named_when(stack, message_id, "failure"))
    assert failure["reason"] == "expired"
    assert sink.handler.rcpt_attempts[rcpt] == 0


async def test_resend_sends_the_archived_message_again_under_a_new_id(
        stack: LocalStack, sink: SmtpSink) -> None:
    rcpt = "again@dest.test"
    [(first_id, _)] = (await _send(stack, recipient=rcpt, **{"from": "news@example.test"}, subject="Again",
                                   text="twice")).items()
    await _only(sink, rcpt)
    async with _client(stack) as client:
        r = await eventually(lambda: _resend(client, first_id))
    [(second_id, to)] = r.items()
    assert to == rcpt and second_id != first_id
    copies = await eventually(lambda: sink.handler.for_rcpt(rcpt) if len(sink.handler.for_rcpt(rcpt)) == 2
                              else [])
    assert copies[0].message()["Subject"] == copies[1].message()["Subject"] == "Again"


async def _resend(client: httpx.AsyncClient, message_id: str) -> dict[str, str] | None:
    r = await client.post("/v1/resend", json={"message": message_id})
    return dict(r.json()) if r.status_code == 200 else None
