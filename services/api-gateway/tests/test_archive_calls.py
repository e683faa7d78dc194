"""SMTPeter's calls on a sent message (/v1/recipient, envelope, text, html, headers, mime, attachments,
embeds), read from the real archive on a real nats-server, through the real gateway."""

from __future__ import annotations

from email.message import EmailMessage

from nats.js import JetStreamContext

from postwire.api_gateway.smtpeter import recipient_ids
from postwire.core.archive import archive
from postwire.core.bodies import BodyStore
from postwire.core.ids import new_message_id
from postwire.db.accounts import NewCredentials
from postwire.v1 import envelope_pb2

from .conftest import Gateway, MakeAccount

PDF = b"%PDF-1.4\n" + bytes(range(256))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def _message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "a@example.org"
    msg["Subject"] = "Your order"
    msg.set_content("Héllo, your order is on its way.\r\n")  # the lines of the message as sent
    msg.add_alternative('<p>Héllo, <img src="cid:logo@shop"> your order</p>\n', subtype="html")
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@shop>", filename="logo.png",
                                     disposition="inline")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def _archived(js: JetStreamContext, account: NewCredentials, raw: bytes) -> dict[str, str]:
    """As the router archives a message sent with one id per recipient; the ids by recipient."""
    message_id = new_message_id()
    ids = recipient_ids(message_id, ["a@example.org", "b@example.org"])
    stored = envelope_pb2.InboundMessage(
        message_id=message_id, account_id=account.account_id, mail_from="bounces@example.com",
        recipients=["a@example.org", "b@example.org"], source="api", subject="Your order", recipient_ids=ids)
    stored.body.CopyFrom(await BodyStore(js, 1024).put(f"{message_id}/original", raw))
    await archive(js, stored)
    return ids


async def test_a_sent_message_can_be_read_back_part_by_part(gateway: Gateway, account: NewCredentials,
                                                             js: JetStreamContext) -> None:
    raw = _message()
    ids = await _archived(js, account, raw)
    auth = gateway.auth(account)

    async def get(path: str) -> tuple[int, str, bytes]:
        r = await gateway.http.get(f"/v1/{path}", headers=auth)
        return r.status_code, r.headers.get("content-type", ""), r.content

    for rcpt, mid in ids.items():  # every id a send returned, each its own recipient
        assert await get(f"recipient/{mid}") == (200, "text/plain; charset=utf-8", rcpt.encode())
    first = ids["a@example.org"]
    assert (await get(f"envelope/{first}"))[2] == b"bounces@example.com"
    status, ctype, text = await get(f"text/{first}")
    # the lines as the message has them (CRLF)
    assert (status, ctype, text.decode()) == (200, "text/plain; charset=utf-8",
                                              "Héllo, your order is on its way.\r\n")
    html = (await get(f"html/{first}"))[2].decode()
    assert html == '<p>Héllo, <img src="cid:logo@shop"> your order</p>\r\n'
    headers = (await get(f"headers/{first}"))[2].decode()
    assert headers.startswith("From: Shop <shop@example.com>\r\n") and "Subject: Your order\r\n" in headers
    assert "Content-Type: multipart/mixed" in headers and "your order is on its way" not in headers
    assert (await get(f"header/{first}"))[2].decode() == headers
    assert (await get(f"mime/{ids['b@example.org']}"))[2] == raw

    r = await gateway.http.get(f"/v1/attachments/{first}", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == [{"rank": 0, "name": "invoice.pdf", "type": "application/pdf", "size": len(PDF),
                         "cid": None}]
    for key in ("invoice.pdf", "0"):
        r = await gateway.http.get(f"/v1/attachments/{first}/{key}", headers=auth)
        assert (r.status_code, r.headers["content-type"], r.content) == (200, "application/pdf", PDF)
        assert r.headers["content-disposition"] == 'attachment; filename="invoice.pdf"'
    missing = await gateway.http.get(f"/v1/attachments/{first}/1", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"

    r = await gateway.http.get(f"/v1/embeds/{first}", headers=auth)
    assert r.json() == [{"rank": 0, "name": "logo.png", "type": "image/png", "size": len(PNG),
                         "cid": "logo@shop"}]
    r = await gateway.http.get(f"/v1/embeds/{first}/logo.png", headers=auth)
    assert (r.status_code, r.headers["content-type"], r.content) == (200, "image/png", PNG)
    assert r.headers["x-content-type-options"] == "nosniff"  # a message's content is never sniffed


async def test_a_message_without_html_or_attachments_answers_empty(gateway: Gateway, account: NewCredentials,
                                                                   js: JetStreamContext) -> None:
    raw = b"From: a@example.com\r\nTo: a@example.org\r\nSubject: plain\r\n\r\njust text\r\n"
    first = (await _archived(js, account, raw))["a@example.org"]
    auth = gateway.auth(account)
    html = await gateway.http.get(f"/v1/html/{first}", headers=auth)
    assert (html.status_code, html.content) == (200, b"")
    assert (await gateway.http.get(f"/v1/text/{first}", headers=auth)).text == "just text\r\n"
    assert (await gateway.http.get(f"/v1/attachments/{first}", headers=auth)).json() == []


async def test_another_accounts_or_an_unknown_id_is_not_found(gateway: Gateway, account: NewCredentials,
                                                              make_account: MakeAccount,
                                                              js: JetStreamContext) -> None:
    first = (await _archived(js, account, _message()))["a@example.org"]
    stranger = gateway.auth(await make_account())
    for path in ("recipient", "envelope", "text", "html", "headers", "mime", "attachments", "embeds",
                 "attachments/{id}/0"):
        url = "/v1/" + (path.replace("{id}", first) if "{id}" in path else f"{path}/{first}")
        theirs = await gateway.http.get(url, headers=stranger)
        assert theirs.status_code == 404 and theirs.json()["error"] == "not_found", (path, theirs.text)
        assert first not in theirs.text or "no message" in theirs.json()["message"]
        assert (await gateway.http.get(url)).status_code == 401
    unknown = await gateway.http.get(f"/v1/mime/{new_message_id()}", headers=gateway.auth(account))
    odd = await gateway.http.get("/v1/mime/a.b*", headers=gateway.auth(account))
    assert unknown.status_code == odd.status_code == 404
