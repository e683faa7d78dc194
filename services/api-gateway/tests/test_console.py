"""The console against the real gateway, NATS and PostgreSQL: over HTTP, logging in, what each page shows
(the same numbers and rows as the API), and what a viewer, a stale form or another account cannot do;
then the same pages in a real headless Chromium (postwire.testing.browser), which must fetch nothing from
any host but Postwire's."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from csv import DictReader
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from playwright.async_api import Page, expect
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core import sandbox_store
from postwire.core.events import make_event
from postwire.core.ids import new_message_id
from postwire.core.topology import WEBHOOKS
from postwire.db import accounts, console_users, webhooks
from postwire.db.accounts import NewCredentials
from postwire.db.domains import add_domain
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.events_query import event_proto_data
from postwire.db.models import Event, Message, Recipient
from postwire.db.suppressions import add as add_suppression
from postwire.testing.dns import DnsServer

Sessions = async_sessionmaker[AsyncSession]
PASSWORD = "correct horse battery staple"


@pytest_asyncio.fixture
async def sessions(pg_url: str) -> AsyncIterator[Sessions]:
    engine = make_engine(pg_url, pool_size=5)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def _user(sessions: Sessions, account: NewCredentials, role: str = "admin") -> str:
    email = f"{role}-{new_message_id()[-8:]}@example.test"
    async with sessions.begin() as s:
        await console_users.create_user(s, account.account_id, email,
                                        "admin" if role == "admin" else "viewer", PASSWORD)
    return email


@asynccontextmanager
async def _login(gateway: Any, email: str, password: str = PASSWORD) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=str(gateway.http.base_url)) as client:
        r = await client.post("/console/login", data={"username": email, "password": password})
        assert r.status_code == 303, r.text
        yield client


async def _sent(sessions: Sessions, account_id: str, subject: str, rcpt: str,
                *events: tuple[str, dict[str, Any]], sender: str = "shop@example.com") -> str:
    """A message as the recorder leaves it: its row, its recipient, and its events."""
    mid = new_message_id()
    now = datetime.now(UTC)
    async with sessions.begin() as s:
        s.add(Message(id=mid, account_id=account_id, mail_from=sender, subject=subject, size=10,
                      source="api", tags=["spring"], metadata_={}))
        s.add(Recipient(message_id=mid, address=rcpt, account_id=account_id, status="delivered", attempts=1,
                        updated_at=now))
        for i, (type_, fields) in enumerate(events):
            ev = make_event(type_, account_id=account_id, message_id=mid, recipient=rcpt, attempt=i, **fields)
            await s.execute(insert(Event).values(
                event_id=ev.event_id, account_id=account_id, message_id=mid, recipient=rcpt, type=type_,
                at=ev.at.ToDatetime(tzinfo=UTC), data=event_proto_data(ev)))
    return mid


def _metric(html: str, name: str) -> int:
    found = re.search(rf'data-metric="{name}">([\d,]+)<', html)
    assert found, name
    return int(found.group(1).replace(",", ""))


async def test_login_logout_and_pages_need_a_session(gateway: Any, account: NewCredentials,
                                                     sessions: Sessions) -> None:
    email = await _user(sessions, account)
    async with httpx.AsyncClient(base_url=str(gateway.http.base_url)) as anonymous:
        for path in ("/console/", "/console/messages", "/console/bounces", "/console/suppressions"):
            r = await anonymous.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/console/login", path
        wrong = await anonymous.post("/console/login", data={"username": email, "password": "nope"})
        assert wrong.status_code == 401 and "Wrong login name or password" in wrong.text
        assert "set-cookie" not in wrong.headers
        unknown = await anonymous.post("/console/login",
                                       data={"username": "who@example.test", "password": "x"})
        assert unknown.status_code == 401
    async with _login(gateway, email) as client:
        cookie = client.cookies.jar
        [c] = [c for c in cookie if c.name == "pw_console"]
        assert c.path == "/console" and c.has_nonstandard_attr("HttpOnly")
        r = await client.get("/console/")
        assert r.status_code == 200
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert email in r.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.text)
        assert csrf
        r = await client.post("/console/logout", data={"csrf": csrf.group(1)})
        assert r.status_code == 303
        client.cookies.set("pw_console", c.value or "", path="/console")  # the old cookie, replayed
        assert (await client.get("/console/")).status_code == 303  # the session is gone


async def test_overview_counts_are_the_apis(gateway: Any, account: NewCredentials,
                                            sessions: Sessions) -> None:
    aid = account.account_id
    await _sent(sessions, aid, "One", "a@example.org", ("accepted", {}), ("delivered", {"smtp_code": 250}),
                ("opened", {}))
    await _sent(sessions, aid, "Two", "b@example.org", ("accepted", {}),
                ("failed", {"smtp_code": 550, "reason": "userunknown", "hardbounce": True}))
    async with _login(gateway, await _user(sessions, account)) as client:
        html = (await client.get("/console/", params={"period": "7d"})).text
    api = (await gateway.http.get("/v1/stats", headers=gateway.auth(account))).json()["stats"]
    for name in ("accepted", "delivered", "failed", "opened", "bounced"):
        assert _metric(html, name) == sum(d[name] for d in api), name
    assert (_metric(html, "accepted"), _metric(html, "delivered"), _metric(html, "failed")) == (2, 1, 1)
    assert 'data-chart="volume"' in html and "<svg" in html


async def test_overview_by_sending_domain_is_the_apis(gateway: Any, account: NewCredentials,
                                                     make_account: Any, sessions: Sessions) -> None:
    aid = account.account_id
    ours, theirs = (f"{new_message_id()[-10:].lower()}.{kind}.example" for kind in ("shop", "news"))
    async with sessions.begin() as s:
        for name in (ours, theirs):
            await add_domain(s, aid, name, "ed25519-sha256")
    delivered = ("delivered", {"smtp_code": 250})
    await _sent(sessions, aid, "One", "a@example.org", ("accepted", {"tags": ["spring"]}), delivered,
                ("opened", {}), sender=f"shop@{ours.upper()}")
    await _sent(sessions, aid, "Two", "b@example.org", ("accepted", {}), delivered, sender=f"info@{ours}")
    await _sent(sessions, aid, "Three", "c@example.org", ("accepted", {}),
                ("failed", {"smtp_code": 550, "reason": "userunknown", "hardbounce": True}),
                sender=f"news@{theirs}")
    other = await make_account()  # the same sending domain in another account's messages: not counted
    await _sent(sessions, other.account_id, "Four", "d@example.org", ("accepted", {}), sender=f"x@{ours}")
    async with _login(gateway, await _user(sessions, account)) as client:
        for domain, expected in ((ours, (2, 2, 0)), (theirs, (1, 0, 1)), ("", (3, 2, 1))):
            html = (await client.get("/console/", params={"period": "7d", "domain": domain})).text
            api = (await gateway.http.get("/v1/stats", headers=gateway.auth(account),
                                          params={"domain": domain} if domain else {})).json()["stats"]
            for name in ("accepted", "delivered", "failed", "opened"):
                assert _metric(html, name) == sum(d[name] for d in api), (domain, name)
            shown = (_metric(html, "accepted"), _metric(html, "delivered"), _metric(html, "failed"))
            assert shown == expected, domain
            # a GET form: the select lists the account's sending domains and keeps the one shown
            options = re.findall(r'<option value="([^"]*)" ?(selected)?>', html.split('name="domain"')[1])
            assert {value for value, _ in options} == {"", ours, theirs}, domain
            assert [value for value, chosen in options if chosen] == ([domain] if domain else []), domain
        both = (await client.get("/console/", params={"domain": ours, "tag": "spring"})).text
        assert (_metric(both, "accepted"), _metric(both, "delivered")) == (1, 0) and 'value="spring"' in both


async def test_message_log_search_and_timeline(gateway: Any, account: NewCredentials, make_account: Any,
                                               sessions: Sessions) -> None:
    aid = account.account_id
    mid = await _sent(sessions, aid, "Your invoice 42", "jane@example.org", ("accepted", {}),
                      ("deferred", {"smtp_code": 451, "response": "451 4.7.1 try later", "mx_host": "mx.ex"}),
                      ("delivered", {"smtp_code": 250, "response": "250 ok", "mx_host": "mx.ex"}))
    other = await _sent(sessions, aid, "Newsletter", "joe@example.org", ("accepted", {}))
    async with _login(gateway, await _user(sessions, account)) as client:
        for q in ("invoice", "jane@example.org", "JANE@example.org", mid):
            page = (await client.get("/console/messages", params={"q": q})).text
            assert f'data-message-id="{mid}"' in page and f'data-message-id="{other}"' not in page, q
        both = (await client.get("/console/messages", params={"q": "spring"})).text
        assert f'data-message-id="{mid}"' in both and f'data-message-id="{other}"' in both
        detail = (await client.get(f"/console/messages/{mid}")).text
        assert re.findall(r'data-event-type="(\w+)"', detail) == ["accepted", "deferred", "delivered"]
        assert "451 4.7.1 try later" in detail
    stranger = await make_account()
    async with _login(gateway, await _user(sessions, stranger)) as client:
        assert (await client.get(f"/console/messages/{mid}")).status_code == 404
        found = (await client.get("/console/messages", params={"q": mid})).text
        assert f'data-message-id="{mid}"' not in found
        assert "jane@example.org" not in (await client.get("/console/messages")).text


async def test_bounces_with_reasons_and_csv(gateway: Any, account: NewCredentials,
                                            sessions: Sessions) -> None:
    aid = account.account_id
    await _sent(sessions, aid, "x", "gone@example.org", ("accepted", {}),
                ("failed", {"smtp_code": 550, "reason": "userunknown", "hardbounce": True,
                            "response": "550 5.1.1 no such user"}))
    await _sent(sessions, aid, "y", "full@example.org", ("accepted", {}),
                ("bounced", {"reason": "mailboxfull", "hardbounce": False}))
    async with _login(gateway, await _user(sessions, account, "viewer")) as client:
        page = (await client.get("/console/bounces")).text
        assert len(re.findall(r"data-bounce ", page)) == 2
        assert "the mailbox does not exist" in page  # the reason explained
        only = (await client.get("/console/bounces", params={"reason": "userunknown"})).text
        assert len(re.findall(r"data-bounce ", only)) == 1 and "gone@example.org" in only
        csv = await client.get("/console/bounces.csv")
        assert csv.headers["content-type"].startswith("text/csv")
        rows = list(DictReader(io.StringIO(csv.text)))
        assert [(r["recipient"], r["type"], r["reason"], r["hardbounce"]) for r in rows] == [
            ("full@example.org", "bounced", "mailboxfull", "false"),
            ("gone@example.org", "failed", "userunknown", "true")], "newest first"
        assert rows[1]["smtp_code"] == "550" and rows[1]["response"] == "550 5.1.1 no such user"
        only_csv = await client.get("/console/bounces.csv", params={"reason": "mailboxfull"})
        assert [r["recipient"] for r in DictReader(io.StringIO(only_csv.text))] == ["full@example.org"]


async def test_bounces_broken_down_by_reason_verdict_domain_and_provider(
        gateway: Any, account: NewCredentials, sessions: Sessions) -> None:
    aid = account.account_id
    unknown = {"smtp_code": 550, "reason": "userunknown", "hardbounce": True}
    await _sent(sessions, aid, "a", "gone@example.org", ("failed", unknown))
    await _sent(sessions, aid, "b", "x@gmail.com",
                ("failed", {**unknown, "mx_host": "gmail-smtp-in.l.google.com"}))
    # a company domain whose MX is Google's: Google's mail, whatever the domain is called
    await _sent(sessions, aid, "c", "y@company.example",
                ("failed", {**unknown, "mx_host": "ASPMX.L.GOOGLE.COM"}))
    await _sent(sessions, aid, "d", "z@example.org",
                ("bounced", {"reason": "mailboxfull", "hardbounce": False, "remote_mta": "mx.example.org"}))
    await _sent(sessions, aid, "e", "w@hotmail.com", ("complained", {"feedback_type": "abuse"}))
    # a failure without a reason (not classified) is not a bounce
    await _sent(sessions, aid, "f", "v@example.org", ("failed", {"smtp_code": 451}))
    async with _login(gateway, await _user(sessions, account, "viewer")) as client:
        page = (await client.get("/console/bounces")).text
    assert 'data-bounce-total="5"' in page and 'data-hard="3"' in page and 'data-soft="2"' in page
    by_reason = r'data-reason-count="(\w+)"><td><a[^>]*>\w+</a></td>\s*<td>(\d+)</td><td>(\d+)</td>'
    assert re.findall(by_reason, page) == [
        ("userunknown", "3", "3"), ("feedback", "1", "0"), ("mailboxfull", "1", "0")]
    assert re.findall(r'data-domain-count="([^"]+)"><td>[^<]+</td><td>(\d+)</td>', page) == [
        ("example.org", "2"), ("company.example", "1"), ("gmail.com", "1"), ("hotmail.com", "1")]
    assert re.findall(r'data-provider-count="([^"]+)"><td>[^<]+</td><td>(\d+)</td>', page) == [
        ("Google", "2"), ("other", "2"), ("Microsoft", "1")]


async def test_suppressions_need_an_admin_and_the_forms_token(gateway: Any, account: NewCredentials,
                                                              sessions: Sessions) -> None:
    h = gateway.auth(account)
    async with _login(gateway, await _user(sessions, account)) as admin:
        page = (await admin.get("/console/suppressions")).text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        stale = await admin.post("/console/suppressions", data={"address": "x@example.org"})
        assert stale.status_code == 403
        assert (await gateway.http.get("/v1/suppressions/x@example.org", headers=h)).status_code == 404
        added = await admin.post("/console/suppressions", data={"address": "x@example.org",
                                                                 "csrf": token.group(1)})
        assert added.status_code == 303
        assert (await gateway.http.get("/v1/suppressions/x@example.org", headers=h)).status_code == 200
        assert 'data-suppression="x@example.org"' in (await admin.get("/console/suppressions")).text
        bad = await admin.post("/console/suppressions", data={"address": "not an address",
                                                               "csrf": token.group(1)})
        assert bad.status_code == 422 and "data-error" in bad.text
        exported = await admin.get("/console/suppressions.csv")
        assert "x@example.org" in exported.text
    async with _login(gateway, await _user(sessions, account, "viewer")) as viewer:
        page = (await viewer.get("/console/suppressions")).text
        assert 'data-suppression="x@example.org"' in page
        assert 'action="/console/suppressions/remove"' not in page  # no remove buttons for a viewer
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token  # the logout form's
        refused = await viewer.post("/console/suppressions/remove", data={"address": "x@example.org",
                                                                          "csrf": token.group(1)})
        assert refused.status_code == 403
    assert (await gateway.http.get("/v1/suppressions/x@example.org", headers=h)).status_code == 200
    async with _login(gateway, await _user(sessions, account)) as admin:
        token = re.search(r'name="csrf" value="([^"]+)"', (await admin.get("/console/suppressions")).text)
        assert token
        r = await admin.post("/console/suppressions/remove", data={"address": "x@example.org",
                                                                    "csrf": token.group(1)})
        assert r.status_code == 303
    assert (await gateway.http.get("/v1/suppressions/x@example.org", headers=h)).status_code == 404


async def test_login_attempts_are_limited(gateway: Any, account: NewCredentials, sessions: Sessions) -> None:
    email = await _user(sessions, account)
    async with httpx.AsyncClient(base_url=str(gateway.http.base_url)) as client:
        guess = {"username": email, "password": "guess"}
        codes = [(await client.post("/console/login", data=guess)).status_code for _ in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        # even the right password waits now: a guesser cannot tell it found it
        r = await client.post("/console/login", data={"username": email, "password": PASSWORD})
        assert r.status_code == 429 and "set-cookie" not in r.headers


async def _token(client: httpx.AsyncClient, path: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', (await client.get(path)).text)
    assert found
    return found.group(1)


async def test_access_keys_logins_and_users_shown_once(gateway: Any, account: NewCredentials,
                                                       sessions: Sessions) -> None:
    async with _login(gateway, await _user(sessions, account)) as admin:
        token = await _token(admin, "/console/access")
        made = await admin.post("/console/access/keys", data={"csrf": token})
        key = re.search(r"data-new-api-key>([^<]+)<", made.text)
        assert made.status_code == 200 and key
        new_key = key.group(1)
        assert (await gateway.http.get("/v1/suppressions", headers={"Authorization": f"Bearer {new_key}"})
                ).status_code == 200
        again = (await admin.get("/console/access")).text
        assert new_key not in again  # shown once
        key_id = new_key.split("_")[1]
        assert f'data-api-key="{key_id}"' in again
        r = await admin.post("/console/access/keys/revoke", data={"csrf": token, "key_id": key_id})
        assert r.status_code == 303 and "revoked" in (await admin.get("/console/access")).text

        login = await admin.post("/console/access/logins", data={"csrf": token})
        username = re.search(r"data-new-smtp-username>([^<]+)<", login.text)
        password = re.search(r"data-new-smtp-password>([^<]+)<", login.text)
        assert username and password
        async with sessions() as s:
            assert await accounts.account_for_smtp_login(s, username.group(1), password.group(1)) == \
                account.account_id
        await admin.post("/console/access/logins/remove", data={"csrf": token, "username": username.group(1)})
        async with sessions() as s:
            assert await accounts.get_smtp_login(s, username.group(1)) is None

        made_user = await admin.post("/console/access/users", data={"csrf": token, "role": "viewer",
                                                                     "email": "new.viewer@example.test"})
        user_password = re.search(r"data-new-user-password>([^<]+)<", made_user.text)
        assert user_password
    async with _login(gateway, "new.viewer@example.test", user_password.group(1)) as viewer:
        page = (await viewer.get("/console/access")).text
        assert "New API key" not in page and 'data-user="new.viewer@example.test"' in page
        refused = await viewer.post("/console/access/keys", data={"csrf": await _token(viewer, "/console/")})
        assert refused.status_code == 403


async def test_access_sets_each_keys_and_logins_default_stream_of_its_own_account_only(
        gateway: Any, account: NewCredentials, make_account: Any, sessions: Sessions) -> None:
    other = await make_account()
    key_id = account.api_key.split("_")[1]
    async with _login(gateway, await _user(sessions, account)) as admin:
        token = await _token(admin, "/console/access")
        for path, form in (("keys/stream", {"key_id": key_id, "stream": "bulk"}),
                           ("logins/stream", {"username": account.smtp_username, "stream": "transactional"}),
                           ("logins/stream", {"username": other.smtp_username, "stream": "bulk"})):
            r = await admin.post(f"/console/access/{path}", data={"csrf": token, **form})
            assert r.status_code == 303
        page = (await admin.get("/console/access")).text
        assert re.search(rf'data-api-key="{key_id}">.*?data-stream="bulk"', page, re.S)
        bad = await admin.post("/console/access/keys/stream", data={"csrf": token, "key_id": key_id,
                                                                   "stream": "urgent"})
        assert bad.status_code == 422
    async with sessions() as s:
        mine = await accounts.get_smtp_login(s, account.smtp_username)
        theirs = await accounts.get_smtp_login(s, other.smtp_username)
        keys = await accounts.api_keys(s, account.account_id)
    assert mine is not None and mine.default_stream == "transactional"
    assert theirs is not None and theirs.default_stream is None  # another account's login: untouched
    assert [k.default_stream for k in keys] == ["bulk"]


async def test_templates_edit_preview_and_save(gateway: Any, account: NewCredentials,
                                               sessions: Sessions) -> None:
    async with _login(gateway, await _user(sessions, account)) as admin:
        token = await _token(admin, "/console/templates/new")
        form = {"csrf": token, "name": "welcome-console", "subject": "Hi {$name|upper}",
                "from": "shop@example.com", "html": "<p>Hello {$name}</p>", "text": "Hello {$name}",
                "data": '{"name": "ann"}'}
        preview = await admin.post("/console/templates/new", data={**form, "action": "preview"})
        assert preview.status_code == 200
        assert re.search(r"data-preview-subject>Hi ANN<", preview.text)
        assert "&lt;p&gt;Hello ann&lt;/p&gt;" in preview.text  # in the sandboxed frame's srcdoc
        broken = await admin.post("/console/templates/new", data={**form, "html": "<p>{if $x}</p>",
                                                                   "action": "preview"})
        assert broken.status_code == 422 and "line 1" in broken.text
        saved = await admin.post("/console/templates/new", data={**form, "action": "save"})
        assert saved.status_code == 303
        tid = saved.headers["location"].rsplit("/", 1)[1]
    api = await gateway.http.get(f"/v1/templates/{tid}", headers=gateway.auth(account))
    assert api.status_code == 200 and api.json()["subject"] == "Hi {$name|upper}"
    async with _login(gateway, await _user(sessions, account, "viewer")) as viewer:
        token = await _token(viewer, f"/console/templates/{tid}")
        page = await viewer.post(f"/console/templates/{tid}",
                                 data={**form, "csrf": token, "action": "preview"})
        assert page.status_code == 200  # a viewer may preview
        refused = await viewer.post(f"/console/templates/{tid}",
                                    data={**form, "csrf": token, "action": "save"})
        assert refused.status_code == 403


async def test_another_accounts_user_sees_none_of_it(gateway: Any, account: NewCredentials,
                                                     make_account: Any, sessions: Sessions) -> None:
    """Every console page takes the account from the session: A's ids mean nothing to B's user."""
    mid = await _sent(sessions, account.account_id, "A's secret", "a-only@example.org", ("accepted", {}),
                      ("failed", {"reason": "userunknown", "hardbounce": True}))
    async with sessions.begin() as s:
        await add_suppression(s, account.account_id, "a-sup@example.org", "manual", "manual")
        key_id = (await accounts.api_keys(s, account.account_id))[0].id
    r = await gateway.http.post("/v1/templates", headers=gateway.auth(account),
                                json={"name": "a-template", "text": "x"})
    tid = r.json()["id"]
    stranger = await make_account()
    async with _login(gateway, await _user(sessions, stranger)) as b:
        assert (await b.get(f"/console/messages/{mid}")).status_code == 404
        assert (await b.get(f"/console/templates/{tid}")).status_code == 404
        for path in ("/console/", "/console/messages", "/console/bounces", "/console/bounces.csv",
                     "/console/suppressions", "/console/suppressions.csv", "/console/templates",
                     "/console/access"):
            text = (await b.get(path)).text
            for secret in ("a-only@example.org", "a-sup@example.org", "a-template", key_id):
                assert secret not in text, (path, secret)
        token = await _token(b, "/console/access")
        await b.post("/console/access/keys/revoke", data={"csrf": token, "key_id": key_id})
        await b.post("/console/suppressions/remove", data={"csrf": token, "address": "a-sup@example.org"})
    async with sessions() as s:
        assert [k.revoked_at for k in await accounts.api_keys(s, account.account_id)] == [None]
    assert (await gateway.http.get("/v1/suppressions/a-sup@example.org",
                                   headers=gateway.auth(account))).status_code == 200


async def test_sandbox_inbox_shows_only_the_accounts_mail(start_gateway: Any, gateway: Any,
                                                          account: NewCredentials, make_account: Any,
                                                          sessions: Sessions, tmp_path: Path) -> None:
    async with _login(gateway, await _user(sessions, account)) as client:  # no sandbox configured
        assert "delivers for real" in (await client.get("/console/sandbox")).text
    sandboxed = await start_gateway(sandbox_dir=tmp_path)
    other = await make_account()
    caught = {}
    for owner, subject in ((account, "Mine"), (other, "Theirs")):
        mid = await _sent(sessions, owner.account_id, subject, "r@example.org", ("accepted", {}))
        raw = (f"Message-ID: <{mid}@api.postwire.test>\r\nSubject: {subject}\r\nFrom: a@example.com\r\n"
               "Content-Type: text/html\r\n\r\n<p>Hi</p>\r\n").encode()
        caught[subject] = sandbox_store.store_message(tmp_path, "bounce@x.test", ["r@example.org"], raw)
    sandbox_store.store_message(tmp_path, "x@y.test", ["r@example.org"], b"Subject: not ours\r\n\r\nx\r\n")
    async with _login(sandboxed, await _user(sessions, account)) as client:
        inbox = (await client.get("/console/sandbox")).text
        assert f'data-sandbox-message="{caught["Mine"].id}"' in inbox
        assert "Theirs" not in inbox and "not ours" not in inbox
        assert (await client.get(f"/console/sandbox/{caught['Mine'].id}")).status_code == 200
        framed = await client.get(f"/console/sandbox/{caught['Mine'].id}/html")
        assert framed.status_code == 200 and framed.text.strip() == "<p>Hi</p>"
        policy = framed.headers["content-security-policy"]
        assert "sandbox" in policy and "style-src 'unsafe-inline'" in policy and "script-src" not in policy
        assert "default-src 'none'" in policy  # nothing remote, no script
        assert (await client.get(f"/console/sandbox/{caught['Theirs'].id}/html")).status_code == 404
        assert (await client.get(f"/console/sandbox/{caught['Theirs'].id}")).status_code == 404
        assert (await client.get("/console/sandbox/..%2f..%2fetc%2fpasswd")).status_code == 404


def _csrf(page: str) -> str:
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, "no form on the page"
    return token.group(1)


async def test_domains_page_shows_what_is_published_now(start_gateway: Any, account: NewCredentials,
                                                         sessions: Sessions, dns_server: DnsServer) -> None:
    gw = await start_gateway(dns_nameservers=dns_server.nameserver, spf_include="spf.relay.test")
    name = f"con{new_message_id()[-8:].lower()}.example"
    created = (await gw.http.post("/v1/domains", json={"name": name}, headers=gw.auth(account))).json()
    spf = next(r for r in created["dns_records"] if r["purpose"] == "spf")
    dns_server.add(name, "TXT", spf["value"])
    dns_server.clear("spf.relay.test")  # the include is followed: it must have an SPF record
    dns_server.add("spf.relay.test", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    async with _login(gw, await _user(sessions, account)) as client:
        page = (await client.get("/console/domains")).text
        section = page[page.index(f'data-domain="{name}"'):]
        assert re.search(r'data-record="spf" data-state="ok"', section)
        assert re.search(r'data-record="dkim" data-state="missing"', section)
        assert "needs attention" in section and 'data-verified="no"' in section

        # Verify before the DKIM record is there changes nothing; after, the domain is verified
        form = {"name": name, "csrf": _csrf(page)}
        assert (await client.post("/console/domains/verify", data=form)).status_code == 303
        unchanged = await gw.http.get(f"/v1/domains/{name}", headers=gw.auth(account))
        assert unchanged.json()["verified"] is False
        dkim = next(r for r in created["dns_records"] if r["purpose"] == "dkim")
        dns_server.add(dkim["name"], "TXT", dkim["value"])
        assert (await client.post("/console/domains/verify", data=form)).status_code == 303
        page = (await client.get("/console/domains")).text
    assert 'data-verified="yes"' in page[page.index(f'data-domain="{name}"'):]
    assert (await gw.http.get(f"/v1/domains/{name}", headers=gw.auth(account))).json()["verified"] is True


async def test_webhooks_page_shows_deliveries_sends_a_test_event_and_replays_dead_letters(
        gateway: Any, account: NewCredentials, sessions: Sessions, js: Any) -> None:
    h = gateway.auth(account)
    hook = (await gateway.http.post("/v1/webhooks", json={"url": "https://1.1.1.1/console-hook"},
                                    headers=h)).json()
    async with sessions.begin() as s:
        await webhooks.park(s, webhook_id=hook["id"], account_id=account.account_id, event_id="ev-1",
                            payload={"webhook_id": hook["id"], "event": {"id": "ev-1"}},
                            last_error="HTTP 500", attempts=9, created_at=datetime.now(UTC))
        await webhooks.record_attempts(s, [webhooks.AttemptRecord(
            webhook_id=hook["id"], account_id=account.account_id, event_id=event_id, event_type="delivered",
            attempt=attempt, outcome=outcome, http_status=status, error=error, duration_ms=12,
            at=datetime.now(UTC)) for event_id, attempt, outcome, status, error in (
                ("ev-2", 1, "failed", 503, "HTTP 503"), ("ev-2", 2, "delivered", 204, ""))])

    async def queued() -> int:
        info = await js.stream_info(WEBHOOKS, subjects_filter=f"webhooks.{hook['id']}")
        return sum((info.state.subjects or {}).values())

    async with _login(gateway, await _user(sessions, account)) as admin:
        page = (await admin.get("/console/webhooks")).text
        assert f'data-webhook="{hook["id"]}"' in page and "HTTP 500" in page
        assert re.findall(r'data-delivery="(ev-\d)" data-outcome="(\w+)"', page) == [
            ("ev-2", "delivered"), ("ev-2", "failed")], "newest first"
        assert "204 delivered" in page and "HTTP 503" in page
        token = await _token(admin, "/console/webhooks")
        sent = await admin.post(f"/console/webhooks/{hook['id']}/test", data={"csrf": token})
        assert sent.status_code == 200 and "test event test_" in sent.text
        assert await queued() == 1
        replayed = await admin.post(f"/console/webhooks/{hook['id']}/replay", data={"csrf": token})
        assert "1 dead letter(s) queued again" in replayed.text and "HTTP 500" not in replayed.text
        assert await queued() == 2
        other = await admin.post("/console/webhooks/wh_not_mine/test", data={"csrf": token})
        assert other.status_code == 404


async def test_suppressions_import_a_csv(gateway: Any, account: NewCredentials, sessions: Sessions) -> None:
    h = gateway.auth(account)
    csv_file = "address,reason\r\none@example.org,manual\r\nTWO@example.org,x\r\nnot-an-address\r\n\r\n"
    async with _login(gateway, await _user(sessions, account)) as admin:
        token = await _token(admin, "/console/suppressions")
        r = await admin.post("/console/suppressions/import", data={"csrf": token},
                             files={"file": ("list.csv", csv_file.encode(), "text/csv")})
        assert r.status_code == 200 and "2 address(es) suppressed" in r.text and "not-an-address" in r.text
    for address in ("one@example.org", "two@example.org"):
        assert (await gateway.http.get(f"/v1/suppressions/{address}", headers=h)).status_code == 200
    async with _login(gateway, await _user(sessions, account, "viewer")) as viewer:
        token = await _token(viewer, "/console/suppressions")
        r = await viewer.post("/console/suppressions/import", data={"csrf": token},
                              files={"file": ("list.csv", b"x@example.org\r\n", "text/csv")})
        assert r.status_code == 403


# ---------------------------------------------------------------------------------------- in a browser


async def _log_in(page: Page, gateway: Any, email: str) -> str:
    base = str(gateway.http.base_url).rstrip("/")
    await page.goto(f"{base}/console/login")
    await page.fill("input[name=username]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    return base


async def test_a_day_in_the_console(page: Page, blocked_requests: list[str], gateway: Any,
                                    account: NewCredentials, sessions: Sessions) -> None:
    aid = account.account_id
    mid = await _sent(sessions, aid, "Your order 7", "jane@example.org", ("accepted", {}),
                      ("delivered", {"smtp_code": 250, "response": "250 2.0.0 queued",
                                     "mx_host": "mx.example"}))
    await _sent(sessions, aid, "Hello", "gone@example.org", ("accepted", {}),
                ("failed", {"smtp_code": 550, "reason": "userunknown", "hardbounce": True}))
    base = str(gateway.http.base_url).rstrip("/")

    await page.goto(f"{base}/console/login")
    await page.fill("input[name=username]", await _user(sessions, account))
    await page.fill("input[name=password]", "wrong")
    await page.click("button[type=submit]")
    await expect(page.locator("[data-error]")).to_contain_text("Wrong login name or password")
    assert [c for c in await page.context.cookies() if c["name"] == "pw_console"] == []

    await _log_in(page, gateway, await _user(sessions, account))
    await expect(page).to_have_url(f"{base}/console/")
    stats = (await gateway.http.get("/v1/stats", headers=gateway.auth(account))).json()["stats"]
    for name in ("accepted", "delivered", "failed"):
        shown = await page.locator(f'[data-metric="{name}"]').inner_text()
        assert int(shown.replace(",", "")) == sum(d[name] for d in stats), name
    await expect(page.locator('[data-chart="volume"] svg')).to_be_visible()

    await page.click("text=Messages")
    await page.fill("input[name=q]", "jane@example.org")
    await page.press("input[name=q]", "Enter")
    await expect(page.locator("[data-message-id]")).to_have_count(1)
    await page.locator(f'[data-message-id="{mid}"] a').first.click()
    await expect(page).to_have_url(f"{base}/console/messages/{mid}")
    await expect(page.locator('[data-event-type="delivered"]')).to_contain_text("250 2.0.0 queued")

    await page.click("text=Bounces")
    await expect(page.locator("[data-bounce]")).to_have_count(1)
    await expect(page.locator("[data-bounce]")).to_contain_text("userunknown")

    await page.click("text=Suppressions")
    await page.fill("input[name=address]", "stop@example.org")
    await page.get_by_role("button", name="Suppress", exact=True).click()
    await expect(page.locator('[data-suppression="stop@example.org"]')).to_be_visible()
    h = gateway.auth(account)
    assert (await gateway.http.get("/v1/suppressions/stop@example.org", headers=h)).status_code == 200
    await page.locator('[data-suppression="stop@example.org"] button').click()
    await expect(page.locator('[data-suppression="stop@example.org"]')).to_have_count(0)
    assert (await gateway.http.get("/v1/suppressions/stop@example.org", headers=h)).status_code == 404

    await page.click("text=Log out")
    await page.goto(f"{base}/console/")
    await expect(page).to_have_url(f"{base}/console/login")
    assert blocked_requests == []  # nothing fetched from any other host


async def test_a_viewer_reads_but_changes_nothing(page: Page, gateway: Any, account: NewCredentials,
                                                  make_account: Any, sessions: Sessions) -> None:
    other = await make_account()
    theirs = await _sent(sessions, other.account_id, "Secret", "them@example.org", ("accepted", {}))
    base = await _log_in(page, gateway, await _user(sessions, account, "viewer"))
    await page.goto(f"{base}/console/suppressions")
    await expect(page.locator("input[name=address]")).to_have_count(0)
    # a hand-made POST with the page's own token is still refused
    token = await page.locator("input[name=csrf]").first.get_attribute("value")
    answer = await page.request.post(f"{base}/console/suppressions",
                                     form={"address": "x@example.org", "csrf": token or ""})
    assert answer.status == 403
    await page.goto(f"{base}/console/messages/{theirs}")
    await expect(page.locator("[data-error]")).to_contain_text("No message")
    await page.goto(f"{base}/console/messages")
    assert not re.search("them@example.org", await page.content())
