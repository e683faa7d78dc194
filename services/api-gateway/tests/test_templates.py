"""Stored templates through the real gateway and PostgreSQL: SMTPeter's /v1/template… calls as its client
code makes them, Postwire's /v1/templates, versions, previews with data, and bad input."""

from __future__ import annotations

import email
from email import policy
from typing import Any

from postwire.db.accounts import NewCredentials

from .conftest import Gateway

WELCOME: dict[str, Any] = {
    "name": "welcome",
    "subject": "Welcome, {$name|default:\"friend\"}",
    "from": "Shop <shop@example.com>",
    "replyto": "help@example.com",
    "html": "<p>Hello {$name|escape}</p>\n{if $vip}<p>VIP</p>{/if}",
    "text": "Hello {$name}",
    "headers": {"X-Campaign": "welcome-{$name|lower}"},
}


async def test_smtpeter_client_creates_lists_previews_updates_and_deletes(gateway: Gateway,
                                                                          account: NewCredentials) -> None:
    h = gateway.auth(account)
    r = await gateway.http.post("/v1/template/html", json=WELCOME, headers=h)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert r.json() == {"id": tid} and r.headers["location"] == f"/v1/template/{tid}/html"

    listed = await gateway.http.get("/v1/templates/0/100", headers=h)
    assert listed.json() == [{"id": tid, "name": "welcome"}]
    assert (await gateway.http.get("/v1/templates/1/100", headers=h)).json() == []

    got = (await gateway.http.get("/v1/template/welcome", headers=h)).json()  # by name
    assert (got["id"], got["version"], got["subject"], got["from"]) == (tid, 1, WELCOME["subject"],
                                                                        "Shop <shop@example.com>")
    html = await gateway.http.get(f"/v1/template/{tid}/html", params={"name": "Ann & Bob", "vip": "1"},
                                  headers=h)
    assert html.status_code == 200 and html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.text == "<p>Hello Ann &amp; Bob</p>\n<p>VIP</p>"
    assert html.headers["content-security-policy"] == "sandbox"  # a customer's HTML on the API's origin
    text = await gateway.http.get(f"/v1/template/{tid}/text", headers=h)  # no data: the defaults
    assert text.text == "Hello "
    mime = await gateway.http.get(f"/v1/template/{tid}/mime", params={"name": "Ann"}, headers=h)
    msg = email.message_from_bytes(mime.content, policy=policy.default)
    assert (msg["Subject"], msg["From"], msg["Reply-To"]) == ("Welcome, Ann", "Shop <shop@example.com>",
                                                             "help@example.com")
    body = msg.get_body(("plain",))
    assert msg["X-Campaign"] == "welcome-ann"
    assert body is not None and body.get_content().strip() == "Hello Ann"

    r = await gateway.http.put("/v1/template/json", json={**WELCOME, "id": tid, "subject": "v2"}, headers=h)
    assert r.status_code == 201 and r.json() == {"id": tid}
    r = await gateway.http.put("/v1/template/json", json={**WELCOME, "subject": "v3"}, headers=h)  # by name
    assert r.status_code == 201 and r.json() == {"id": tid}
    got = (await gateway.http.get(f"/v1/template/{tid}/json", headers=h)).json()
    assert (got["version"], got["subject"]) == (3, "v3")

    assert (await gateway.http.delete("/v1/template/welcome", headers=h)).status_code == 204
    assert (await gateway.http.get(f"/v1/template/{tid}", headers=h)).status_code == 404
    assert (await gateway.http.get("/v1/templates/0/100", headers=h)).json() == []
    again = await gateway.http.post("/v1/template/html", json=WELCOME, headers=h)  # the name is free again
    assert again.status_code == 201 and again.json()["id"] != tid


async def test_postwire_templates_keep_every_version_and_preview_any(gateway: Gateway,
                                                                     account: NewCredentials) -> None:
    h = gateway.auth(account)
    r = await gateway.http.post("/v1/templates", json=WELCOME, headers=h)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["version"] == 1 and created["name"] == "welcome" and created["from"] == WELCOME["from"]
    assert r.headers["location"] == f"/v1/templates/{created['id']}"
    dup = await gateway.http.post("/v1/templates", json=WELCOME, headers=h)
    assert dup.status_code == 409 and dup.json()["error"] == "name_taken"

    r = await gateway.http.put("/v1/templates/welcome", json={**WELCOME, "name": "welcome-v2",
                                                              "text": "Hi {$name}"}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["name"]) == (2, "welcome-v2")  # a new name renames it
    versions = (await gateway.http.get("/v1/templates/welcome-v2/versions", headers=h)).json()
    assert [v["version"] for v in versions] == [2, 1]
    old = (await gateway.http.get(f"/v1/templates/{created['id']}/versions/1", headers=h)).json()
    assert old["text"] == "Hello {$name}"

    now = await gateway.http.post(f"/v1/templates/{created['id']}/preview", json={"data": {"name": "Zoë"}},
                                  headers=h)
    assert now.status_code == 200, now.text
    assert now.json() == {"subject": "Welcome, Zoë", "from": "Shop <shop@example.com>",
                          "replyto": "help@example.com", "html": "<p>Hello Zoë</p>\n", "text": "Hi Zoë",
                          "headers": {"X-Campaign": "welcome-zoë"}}
    then = await gateway.http.post(f"/v1/templates/{created['id']}/preview",
                                   json={"data": {"name": "Zoë", "vip": True}, "version": 1}, headers=h)
    assert (then.json()["text"], then.json()["html"]) == ("Hello Zoë", "<p>Hello Zoë</p>\n<p>VIP</p>")
    listed = (await gateway.http.get("/v1/templates", headers=h)).json()
    assert listed == {"templates": [{"id": created["id"], "name": "welcome-v2"}]}


async def test_bad_templates_are_refused_saying_what_is_wrong(gateway: Gateway,
                                                             account: NewCredentials) -> None:
    h = gateway.auth(account)

    async def refused(body: dict[str, Any], status: int = 422) -> dict[str, Any]:
        r = await gateway.http.post("/v1/templates", json=body, headers=h)
        assert r.status_code == status, r.text
        return dict(r.json())

    broken = await refused({**WELCOME, "html": "<p>\n{if $vip}VIP\n</p>"})
    assert broken["detail"][0]["loc"] == ["body", "html"] and broken["detail"][0]["type"] == "template_syntax"
    assert "line 2" in broken["detail"][0]["msg"]
    header = await refused({**WELCOME, "headers": {"X-A": "{$a|}"}})
    assert header["detail"][0]["loc"] == ["body", "headers", "X-A"]
    for name in ("has space", "123", "", "x" * 101):
        assert (await refused({**WELCOME, "name": name}))["detail"][0]["loc"] == ["body", "name"], name
    assert (await refused({**WELCOME, "headers": {"Subject": "x"}}))["detail"][0]["type"] == "reserved_header"
    injected = await refused({**WELCOME, "headers": {"X-A": "a\r\nBcc: evil@example.com"}})
    assert injected["detail"][0]["type"] == "header_injection"
    assert (await refused({k: v for k, v in WELCOME.items() if k != "name"}))["detail"][0]["loc"] == \
        ["body", "name"]
    assert (await refused({**WELCOME, "html": "x" * 210_000}, 413))["error"] == "template_too_large"
    assert (await refused({**WELCOME, "html": "x" * 300_000}, 413))["error"] == "message_too_large"
    missing = await gateway.http.put("/v1/templates/nope", json=WELCOME, headers=h)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert (await gateway.http.get("/v1/templates", headers=h)).json() == {"templates": []}  # nothing saved


async def test_a_runaway_template_stops_at_the_limits_and_the_gateway_stays_up(
        gateway: Gateway, account: NewCredentials) -> None:
    h = gateway.auth(account)
    loop = {"name": "runaway", "text": "{foreach $rows as $a}{foreach $rows as $b}{foreach $rows as $c}"
                                       "{$a}{$b}{$c}{/foreach}{/foreach}{/foreach}"}
    assert (await gateway.http.post("/v1/templates", json=loop, headers=h)).status_code == 201
    r = await gateway.http.post("/v1/templates/runaway/preview", json={"data": {"rows": list(range(500))}},
                                headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "template_render", r.text
    assert r.json()["detail"][0]["loc"] == ["body", "data"]
    assert "text" in r.json()["detail"][0]["msg"]  # the part that ran away is named
    small = await gateway.http.post("/v1/templates/runaway/preview", json={"data": {"rows": [1, 2]}},
                                    headers=h)
    assert small.status_code == 200 and small.json()["text"] == "111112121122211212221222"
