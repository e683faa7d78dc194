"""A newcomer's first run: `postwire run` as `make run` starts it, with no test DNS and no test MX. Mail to
a domain that exists nowhere is delivered to the run's own sandbox MX and can be read back from the
sandbox folder (postwire.core.sandbox_store, what the console reads); a webhook to a receiver on this
machine gets a signed test event without any switch set."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import psutil
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from postwire.core import sandbox_store
from postwire.testing.fixtures import eventually
from postwire.testing.stack import LocalStack
from postwire.testing.webhook_endpoint import running_receiver
from postwire.webhook_notifier.webhook_signature import verify

pytestmark = pytest.mark.slow  # starts the whole system

# the local run's own defaults are under test: none of these may come from the caller's environment
CALLERS_SWITCHES = ("POSTWIRE_WEBHOOK_ALLOW_HTTP", "POSTWIRE_WEBHOOK_ALLOW_PRIVATE", "POSTWIRE_RELAY_HOST",
                    "POSTWIRE_DNS_NAMESERVERS", "POSTWIRE_MX_PORT", "POSTWIRE_SANDBOX_DIR")


@pytest_asyncio.fixture(scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    data_dir: Path = tmp_path_factory.mktemp("sandbox-run")
    stack = LocalStack(data_dir, dns_nameserver="", mx_port=0, sandbox=True,
                       extra_env={"POSTWIRE_WEBHOOK_RECONCILE_S": "0.5"})
    with pytest.MonkeyPatch.context() as env:  # the run's environment is read when it starts
        for name in CALLERS_SWITCHES:
            env.delenv(name, raising=False)
        await stack.start()
    yield stack
    code = await stack.stop()
    assert code == 0, f"postwire run exited with {code}"
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(data_dir) in part for part in (p.info["cmdline"] or []))]
    assert leftovers == [], f"processes left behind: {leftovers}"


def _api_key(run: LocalStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {run.demo()['api_key']}"}


def _caught_for(run: LocalStack, rcpt: str) -> list[sandbox_store.CaughtMessage]:
    return [m for m in sandbox_store.list_messages(run.sandbox_dir, limit=1000) if rcpt in m.recipients]


async def _delivered_event(http: httpx.AsyncClient, run: LocalStack, message_id: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        r = await http.get("/v1/events", params={"message_id": message_id, "type": "delivered"},
                           headers=_api_key(run))
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events[0] if events else None

    found: dict[str, Any] = await eventually(find)
    return found


async def test_api_mail_to_a_domain_that_does_not_exist_lands_in_the_sandbox(run: LocalStack) -> None:
    rcpt = f"someone@no-such-domain-{uuid.uuid4().hex[:8]}.example"
    async with httpx.AsyncClient(base_url=run.api, timeout=30, trust_env=False) as http:
        r = await http.post("/v1/messages", headers=_api_key(run), json={
            "from": "you@example.com", "to": [rcpt], "subject": "Hi from the README",
            "html": "<style>p{color:red}</style><p>Hello</p>"})
        assert r.status_code == 202, r.text
        message_id = r.json()["id"]

        [caught] = await eventually(lambda: _caught_for(run, rcpt))
        assert caught.subject == "Hi from the README" and caught.recipients == (rcpt,)
        assert caught.mail_from.endswith("@bounces.postwire.local")  # the VERP return path, as for real
        full = sandbox_store.read_message(run.sandbox_dir, caught.id)
        assert full is not None and full.raw is not None
        assert b'<p style="color: red;">Hello</p>' in full.raw  # the transformer inlined the CSS

        event = await _delivered_event(http, run, message_id)
        assert event["recipient"] == rcpt and event["mx_host"] == "127.0.0.1" and event["smtp_code"] == 250
        assert caught.id in event["response"]  # the sandbox's "250 2.0.0 Ok: caught as <id>"
        r = await http.get(f"/v1/messages/{message_id}", headers=_api_key(run))
        [state] = r.json()["recipients"]
        assert (state["status"], state["mx_host"]) == ("delivered", "127.0.0.1")


async def test_a_simulated_bounce_is_classified_suppressed_and_shown(run: LocalStack) -> None:
    rcpt = f"bounce+{uuid.uuid4().hex[:8]}@customers.example"
    async with httpx.AsyncClient(base_url=run.api, timeout=30, trust_env=False) as http:
        r = await http.post("/v1/messages", headers=_api_key(run), json={
            "from": "you@example.com", "to": [rcpt], "subject": "This one bounces", "text": "Hello"})
        assert r.status_code == 202, r.text
        message_id = r.json()["id"]

        async def failed() -> dict[str, Any] | None:
            r = await http.get("/v1/events", params={"message_id": message_id, "type": "failed"},
                               headers=_api_key(run))
            events: list[dict[str, Any]] = r.json()["events"]
            return events[0] if events else None

        event = await eventually(failed)
        assert (event["smtp_code"], event["enhanced_status"], event["reason"], event["hardbounce"]) == (
            550, "5.1.1", "userunknown", True)
        async def suppression() -> dict[str, Any] | None:
            r = await http.get(f"/v1/suppressions/{rcpt}", headers=_api_key(run))
            return r.json() if r.status_code == 200 else None

        assert (await eventually(suppression))["reason"] == "userunknown"
    assert _caught_for(run, rcpt) == []


async def test_smtp_mail_lands_in_the_sandbox(run: LocalStack) -> None:
    demo = run.demo()
    rcpt = f"reader@nowhere-{uuid.uuid4().hex[:8]}.example"
    msg = EmailMessage()
    msg["From"] = "you@example.com"
    msg["To"] = rcpt
    msg["Subject"] = "Hi over SMTP"
    msg.set_content("Hello")
    async with aiosmtplib.SMTP(hostname=run.host, port=run.smtp_port, start_tls=False) as smtp:
        await smtp.login(demo["smtp_username"], demo["smtp_password"])
        await smtp.send_message(msg)
    [caught] = await eventually(lambda: _caught_for(run, rcpt))
    assert caught.subject == "Hi over SMTP"


async def test_a_webhook_on_this_machine_gets_a_signed_test_event(run: LocalStack) -> None:
    async with (running_receiver() as receiver,
                httpx.AsyncClient(base_url=run.api, timeout=30, trust_env=False) as http):
        r = await http.post("/v1/webhooks", json={"url": receiver.url}, headers=_api_key(run))
        assert r.status_code == 201, r.text  # plain http to loopback: allowed in the local run
        hook = r.json()
        r = await http.post(f"/v1/webhooks/{hook['id']}/test", headers=_api_key(run))
        assert r.status_code == 202, r.text
        event_id = r.json()["event_id"]

        def the_test_event() -> tuple[bytes, str] | None:
            return next(((body, sig) for body, sig in receiver.posts
                         if json.loads(body)["event"]["id"] == event_id), None)

        body, signature = await eventually(the_test_event)
        assert verify(hook["secret"], body, signature)
        assert json.loads(body)["event"]["type"] == "test"


async def test_the_console_shows_the_sandbox_inbox(run: LocalStack, page: Page,
                                                   blocked_requests: list[str]) -> None:
    """The README's path: `make run`, a curl, then the console (the demo's console user from
    demo-account.json) shows the caught message rendered, and its timeline."""
    demo = run.demo()
    rcpt = f"newcomer@nowhere-{uuid.uuid4().hex[:8]}.example"
    async with httpx.AsyncClient(base_url=run.api, timeout=30, trust_env=False) as http:
        r = await http.post("/v1/messages", headers=_api_key(run), json={
            "from": "you@example.com", "to": [rcpt], "subject": "Seen in the console",
            "html": "<p>Hello <b>console</b></p>"})
        assert r.status_code == 202, r.text
        message_id = r.json()["id"]
        await _delivered_event(http, run, message_id)
    await page.goto(f"{run.api}/console/login")
    await page.fill("input[name=username]", demo["console_user"])
    await page.fill("input[name=password]", demo["console_password"])
    await page.click("button[type=submit]")
    await page.goto(f"{run.api}/console/sandbox")
    row = page.locator("[data-sandbox-message]", has_text=rcpt)
    await expect(row).to_have_count(1)
    await row.locator("a").last.click()
    frame = page.frame_locator("[data-sandbox-html]")
    await expect(frame.locator("b")).to_have_text("console")
    await page.click(f'a[href="/console/messages/{message_id}"]')
    await expect(page.locator('[data-event-type="delivered"]')).to_contain_text("127.0.0.1")
    assert blocked_requests == []
