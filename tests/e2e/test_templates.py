"""Issue 13 on the local run: sends built from stored templates and personalisation data.

A client uses SMTPeter's calls (POST /v1/template/json, /v1/send with `template`, `data` and `recipients`
as an object, /v1/resend, /v1/events/template/{id}) and Postwire's own POST /v1/messages; each recipient's
copy arrives at a loopback MX rendered with its own variables, the CSS inlined around the template's tags.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from postwire.testing.fixtures import eventually
from postwire.testing.smtp import Received, SmtpSink
from postwire.testing.stack import LocalStack

pytestmark = pytest.mark.slow  # starts the whole system

ROWS = ('<html><head><style>td.item { color: #ff0000; }</style></head><body><table>'
        '{foreach $items as $i}<tr><td class="item">{$i|escape}</td></tr>{/foreach}</table>'
        '<p>Sent to {$recipient}</p>'
        '<a href="https://shop.example/u?who={$name|urlencode}">you</a> <a href="https://shop.example/">shop</a>'
        '</body></html>')
TRACK_LINK = re.compile(r'href="(http://127\.0\.0\.1:\d+/t/c/[A-Za-z0-9_-]+)"')


@pytest_asyncio.fixture(scope="module")
async def api(stack: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api,
                                 params={"access_token": stack.demo()["api_key"]}) as client:
        yield client


async def _template(api: httpx.AsyncClient, **content: Any) -> int:
    r = await api.post("/v1/template/json", json=content)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _send(api: httpx.AsyncClient, **request: Any) -> dict[str, str]:
    r = await api.post("/v1/send", json=request)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _one(sink: SmtpSink, rcpt: str, count: int = 1) -> Received:
    found = await eventually(lambda: (got if len(got := sink.handler.for_rcpt(rcpt)) >= count else None))
    return found[count - 1]


def _html(received: Received) -> str:
    part = received.message().get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def _text(received: Received) -> str:
    part = received.message().get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


async def _events(api: httpx.AsyncClient, kind: str, value: str) -> list[dict[str, Any]]:
    r = await api.get(f"/v1/events/{kind}/{value}")
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_stored_template_with_data_per_recipient(stack: LocalStack, sink: SmtpSink,
                                                       api: httpx.AsyncClient) -> None:
    tid = await _template(api, name="rows", subject='Hello {$name|default:"friend"}',
                          **{"from": "Shop <news@example.test>"}, html=ROWS,
                          text="Hi {$name}, {$items|count} items")
    answer = await _send(api, template=tid, data={"items": ["apple", "pear"]}, inlinecss=True,
                         trackclicks=True, tags=["rows"],
                         recipients={"ann@dest.test": {"name": "Ann"},
                                     "bob@dest.test": {"name": "Bob & Co", "items": ["<fig>"]},
                                     "cy@dest.test": None})
    assert sorted(answer.values()) == ["ann@dest.test", "bob@dest.test", "cy@dest.test"]

    ann, bob, cy = [await _one(sink, r) for r in ("ann@dest.test", "bob@dest.test", "cy@dest.test")]
    assert (ann.message()["Subject"], bob.message()["Subject"], cy.message()["Subject"]) == (
        "Hello Ann", "Hello Bob & Co", "Hello friend")
    assert ann.message()["To"] == "ann@dest.test"  # each copy addressed to its recipient alone
    assert _text(ann).strip() == "Hi Ann, 2 items"
    html = _html(ann)
    # inlined once, rendered per recipient
    cells = re.findall(r'<td class="item" style="([^"]*)">([^<]*)</td>', html)
    assert [cell for _, cell in cells] == ["apple", "pear"]
    assert all("#ff0000" in style for style, _ in cells)
    assert "Sent to ann@dest.test" in html
    assert re.findall(r'<td class="item" style="[^"]*">([^<]*)</td>', _html(bob)) == ["&lt;fig&gt;"]
    # the personalised link stays as rendered (untracked); the plain one is tracked
    assert 'href="https://shop.example/u?who=Bob+%26+Co"' in _html(bob).replace("%20", "+")
    [tracked] = TRACK_LINK.findall(html)
    async with httpx.AsyncClient() as browser:
        click = await browser.get(tracked)
    assert click.status_code == 302 and click.headers["location"] == "https://shop.example/"

    # the message log shows each recipient's subject as rendered
    ann_id = next(mid for mid, rcpt in answer.items() if rcpt == "ann@dest.test")
    r = await api.get(f"/v1/messages/{ann_id}")
    assert r.status_code == 200 and r.json()["subject"] == "Hello Ann", r.text
    # the archive shows each recipient's own copy (as accepted: before inlining)
    bob_id = next(mid for mid, rcpt in answer.items() if rcpt == "bob@dest.test")
    r = await api.get(f"/v1/html/{bob_id}")
    assert r.status_code == 200 and "&lt;fig&gt;" in r.text and "Sent to bob@dest.test" in r.text
    r = await api.get(f"/v1/mime/{bob_id}")
    assert r.status_code == 200 and "Subject: Hello Bob & Co" in r.text

    events = await eventually(lambda: _deliveries(api, "template", str(tid), 3))
    assert {e["recipient"] for e in events} == {"ann@dest.test", "bob@dest.test", "cy@dest.test"}
    assert all(e["templateid"] == tid for e in events)
    by_name = await _events(api, "template", "rows")
    assert {e["id"] for e in by_name} >= {e["id"] for e in events}


async def _deliveries(api: httpx.AsyncClient, kind: str, value: str, n: int) -> list[dict[str, Any]] | None:
    found = [e for e in await _events(api, kind, value) if e["event"] == "delivery"]
    return found if len(found) >= n else None


async def test_one_recipient_failing_to_render_fails_alone(sink: SmtpSink, api: httpx.AsyncClient) -> None:
    """A loop too long for the limits fails that recipient with reason `template`; the others arrive."""
    loop = "{foreach $n as $a}{foreach $n as $b}{foreach $n as $c}x{/foreach}{/foreach}{/foreach}"
    answer = await _send(api, **{"from": "news@example.test"}, subject="Loop", text=loop,
                         recipients={"small@dest.test": {"n": [1, 2]},
                                     "huge@dest.test": {"n": list(range(500))}})
    ids = {rcpt: mid for mid, rcpt in answer.items()}
    small = await _one(sink, "small@dest.test")
    assert _text(small).strip() == "x" * 8
    failures = await eventually(lambda: _named(api, ids["huge@dest.test"], "failure"))
    assert failures[0]["reason"] == "template"
    assert failures[0]["hardbounce"] is False  # not the address's fault: never suppressed
    assert "steps" in failures[0]["description"]
    assert sink.handler.for_rcpt("huge@dest.test") == []
    r = await api.get("/healthz")
    assert r.status_code == 200


async def _named(api: httpx.AsyncClient, message_id: str, name: str) -> list[dict[str, Any]] | None:
    found = [e["data"] for e in await _events(api, "messageid", message_id) if e["event"] == name]
    return found or None


async def test_resend_uses_the_version_the_message_was_built_from(sink: SmtpSink,
                                                                  api: httpx.AsyncClient) -> None:
    tid = await _template(api, name="versioned", subject="Version one for {$name}",
                          **{"from": "news@example.test"}, text="one")
    sent = await _send(api, template="versioned", recipients={"ver@dest.test": {"name": "Vi"}})
    [(mid, _)] = sent.items()
    first = await _one(sink, "ver@dest.test")
    assert first.message()["Subject"] == "Version one for Vi"
    r = await api.put("/v1/template/json", json={"id": tid, "subject": "Version two", "text": "two",
                                                 "from": "news@example.test"})
    assert r.status_code in (200, 201), r.text
    r = await api.post("/v1/resend", json={"message": mid})
    assert r.status_code == 200, r.text
    again = await _one(sink, "ver@dest.test", count=2)
    assert again.message()["Subject"] == "Version one for Vi"
    assert _text(again).strip() == "one"
    # a new send takes the current version
    await _send(api, template=tid, recipient="ver2@dest.test")
    assert (await _one(sink, "ver2@dest.test")).message()["Subject"] == "Version two"


async def test_inline_personalisation_and_v1_messages_with_recipient_data(sink: SmtpSink,
                                                                          api: httpx.AsyncClient) -> None:
    await _send(api, **{"from": "Desk <desk@example.test>"}, subject="Code {$code|upper}",
                text="Dear {$first}, your code is {$code|upper}.", data={"first": "customer"},
                recipients={"inline@dest.test": {"code": "ab12"}})
    inline = await _one(sink, "inline@dest.test")
    assert inline.message()["Subject"] == "Code AB12"
    assert _text(inline).strip() == "Dear customer, your code is AB12."

    await _template(api, name="native", subject="Order {$order} for {$recipient}",
                    **{"from": "Shop <shop@example.test>"}, html="<p>{$greeting} {$name}</p>")
    r = await api.post("/v1/messages", json={
        "template": "native", "data": {"greeting": "Hello"},
        "to": [{"email": "Nat <nat@dest.test>", "data": {"name": "Nat", "order": 7}},
               {"email": "ole@dest.test", "data": {"name": "Ole", "order": 8}}]})
    assert r.status_code == 202, r.text
    nat, ole = await _one(sink, "nat@dest.test"), await _one(sink, "ole@dest.test")
    assert nat.message()["Subject"] == "Order 7 for nat@dest.test"
    assert "<p>Hello Ole</p>" in _html(ole)
    assert ole.message()["To"] == "ole@dest.test"
