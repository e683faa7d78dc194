"""The SMTPeter-compatible API over real HTTP, NATS and PostgreSQL: /v1/send (JSON, form, multipart, mime),
?access_token=, /v1/resend from the archive, /v1/events/{kind}/{value}, /v1/stats totals.

Requests are written from SMTPeter's documented shapes (docs/smtpeter.md): a client written for it must
work unchanged.
"""

from __future__ import annotations

import base64
import email
import logging
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
from nats.js import JetStreamContext
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.formdata import FormError, nest, urlencoded_pairs
from postwire.api_gateway.routes_smtpeter import add_months
from postwire.api_gateway.smtpeter import id_time, recipient_ids
from postwire.core.archive import archive
from postwire.core.bodies import BodyStore
from postwire.core.events import make_event
from postwire.core.ids import new_message_id
from postwire.db.accounts import NewCredentials
from postwire.db.events_query import event_proto_data
from postwire.db.models import Event
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.v1 import envelope_pb2

if TYPE_CHECKING:
    from .conftest import Gateway, Inbound, MakeAccount, StartGateway

Sessions = async_sessionmaker[AsyncSession]
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 2


def token(creds: NewCredentials) -> dict[str, str]:
    return {"access_token": creds.api_key}


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def fields(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "recipient": "john@example.org",
        "from": "Info Desk <info@example.com>",
        "to": "john@example.org",
        "subject": "This is the subject",
        "text": "This is example content",
    }
    body.update(overrides)
    return body


# ------------------------------------------------------------------------------------------- /v1/send


async def test_send_json_fields_builds_the_message_and_one_id_per_recipient(
        gateway: Gateway, account: NewCredentials, inbound: Inbound) -> None:
    body = fields(
        recipients=["jane@example.net", "JOHN@example.org", "hidden@example.com"],
        to=["john@example.org", "\"Number three\" <three@example.com>, jane@example.net"],
        cc="Carl <carl@example.org>", replyto="replies@example.com",
        html="<html><head><style>p{color:red}</style></head><body><p>hi</p></body></html>",
        unsubscribe={"email": "unsub@example.com", "url": "https://example.com/u?id=1", "oneclick": True},
        extra={"x-my-identifier": "abcdefg", "X-Custom-Property": "custom"},
        attachments=[
            {"data": base64.b64encode(PDF).decode(), "name": "report.pdf", "type": "application/pdf"},
            {"data": base64.b64encode(b"hello").decode(), "name": "note.txt"}],
        envelope="bounces@example.com", inlinecss=True, trackopens=True, preventscam=True,
        tags=["welcome", "spring-2026"], maxdelivertime="2031-05-06 07:08:09",
        dsn={"notify": "SUCCESS,FAILURE", "ret": "hdrs", "envid": "ENV-1", "orcpt": "orig@example.org"})

    r = await gateway.http.post("/v1/send", params=token(account), json=body)

    assert r.status_code == 200, r.text
    answer = r.json()
    assert list(answer.values()) == ["john@example.org", "jane@example.net", "hidden@example.com"]
    assert len(set(answer)) == 3
    [env] = await inbound.read(account.account_id)
    first = next(iter(answer))
    assert env.message_id == first
    assert list(env.recipients) == list(answer.values())
    assert dict(env.recipient_ids) == {rcpt: mid for mid, rcpt in answer.items()}
    assert env.mail_from == "bounces@example.com" and env.source == "api"
    assert env.subject == "This is the subject"
    assert list(env.tags) == ["welcome", "spring-2026"]
    opts = env.options
    assert (opts.inline_css, opts.track_clicks, opts.track_opens, opts.prevent_scam) == (True,) * 4
    assert opts.HasField("track_bounces") and opts.track_bounces is False  # envelope given: bounces go there
    assert opts.max_deliver_time.ToDatetime(tzinfo=UTC) == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert (env.dsn.ret, env.dsn.envid) == ("HDRS", "ENV-1")
    for rcpt in env.recipients:
        assert list(env.recipient_dsn[rcpt].notify) == ["SUCCESS", "FAILURE"]
        assert env.recipient_dsn[rcpt].orcpt == "rfc822;orig@example.org"

    msg = parse(env.body.inline)
    assert msg["From"].addresses[0].display_name == "Info Desk"
    assert str(msg["To"]) == "john@example.org, Number three <three@example.com>, jane@example.net"
    assert str(msg["Cc"]) == "Carl <carl@example.org>" and str(msg["Reply-To"]) == "replies@example.com"
    assert b"hidden@example.com" not in env.body.inline  # recipients decide delivery, not headers
    assert msg["List-Unsubscribe"] == "<mailto:unsub@example.com>, <https://example.com/u?id=1>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-My-Identifier"] == "abcdefg" and msg["X-Custom-Property"] == "custom"
    assert msg["Message-ID"] == f"<{first}@api.postwire.test>"
    assert msg.get_body(("plain",)).get_content().strip() == "This is example content"  # type: ignore[union-attr]
    assert "<style>" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    pdf, note = msg.iter_attachments()
    assert (pdf.get_filename(), pdf.get_content_type(), pdf.get_content()) == \
        ("report.pdf", "application/pdf", PDF)
    assert (note.get_filename(), note.get_content_type()) == ("note.txt", "text/plain")


async def test_send_defaults_as_smtpeter(gateway: Gateway, account: NewCredentials, inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/send", params=token(account), json=fields())

    assert r.status_code == 200, r.text
    [(mid, rcpt)] = r.json().items()
    [env] = await inbound.read(account.account_id)
    assert (env.message_id, list(env.recipients), dict(env.recipient_ids)) == (mid, [rcpt], {rcpt: mid})
    assert env.mail_from == "info@example.com"
    opts = env.options
    assert (opts.inline_css, opts.track_clicks, opts.track_opens, opts.prevent_scam) == \
        (False, True, False, False)
    assert opts.track_bounces is True
    assert not opts.HasField("max_deliver_time")  # the dispatcher's own delivery window applies
    assert not env.HasField("dsn") and not env.recipient_dsn


async def test_send_with_idempotency_key_answers_the_same_ids(gateway: Gateway, account: NewCredentials,
                                                               inbound: Inbound) -> None:
    body = fields(recipients=["b@example.org", "c@example.org"])
    headers = {"Idempotency-Key": "send-1"}
    first = await gateway.http.post("/v1/send", params=token(account), json=body, headers=headers)
    again = await gateway.http.post("/v1/send", params=token(account), json=dict(reversed(body.items())),
                                    headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    [env] = await inbound.read(account.account_id)
    assert dict(env.recipient_ids) == {rcpt: mid for mid, rcpt in first.json().items()}
    # the ids are derived from the message id: a takeover after a crash hands out the same ones
    assert recipient_ids(env.message_id, list(env.recipients)) == dict(env.recipient_ids)


async def test_send_form_encoded_with_bracket_notation(gateway: Gateway, account: NewCredentials,
                                                       inbound: Inbound) -> None:
    form = [("recipients[]", "a@example.org"), ("recipients[]", "b@example.org"),
            ("from", "info@example.com"), ("to", "a@example.org"), ("cc", ""), ("subject", "Form"),
            ("text", "hello"), ("dsn[notify]", "NEVER"), ("dsn[ret]", "FULL"), ("extra[x-foo]", "bar"),
            ("attachments[0][data]", base64.b64encode(b"one").decode()), ("attachments[0][name]", "1.txt"),
            ("attachments[1][data]", base64.b64encode(b"two").decode()), ("attachments[1][name]", "2.txt"),
            ("trackclicks", "false"), ("trackbounces", "0"), ("trackopens", "1"), ("tags", "t1"),
            ("tags", "t2"), ("unsubscribe[url]", "https://example.com/u"), ("unsubscribe[oneclick]", "true"),
            ("maxdelivertime", "2030-01-02 03:04:05")]

    r = await gateway.http.post("/v1/send", params=token(account), content=urlencode(form),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert r.status_code == 200, r.text
    assert list(r.json().values()) == ["a@example.org", "b@example.org"]
    [env] = await inbound.read(account.account_id)
    o = env.options
    assert (o.track_clicks, o.track_bounces, o.track_opens) == (False, False, True)
    assert list(env.tags) == ["t1", "t2"] and env.dsn.ret == "FULL"
    assert list(env.recipient_dsn["a@example.org"].notify) == ["NEVER"]
    assert env.options.max_deliver_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    msg = parse(env.body.inline)
    assert msg["X-Foo"] == "bar" and "Cc" not in msg
    assert msg["List-Unsubscribe"] == "<https://example.com/u>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [a.get_content() for a in msg.iter_attachments()] == ["one", "two"]


async def test_send_multipart_form(gateway: Gateway, account: NewCredentials, inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/send", params=token(account), files={
        "recipient": (None, "m@example.org"), "from": (None, "info@example.com"),
        "subject": (None, "Multipart ünïcode"), "html": (None, "<p>hi</p>"), "tags[]": (None, "only")})

    assert r.status_code == 200, r.text
    [env] = await inbound.read(account.account_id)
    assert list(env.recipients) == ["m@example.org"] and list(env.tags) == ["only"]
    assert parse(env.body.inline)["Subject"] == "Multipart ünïcode"


async def test_send_mime_mode_takes_option_headers(gateway: Gateway, account: NewCredentials,
                                                   inbound: Inbound) -> None:
    mime = ("MIME-Version: 1.0\r\nFrom: <info@example.com>\r\nTo: john@example.org\r\n"
            "Bcc: secret@example.com\r\nSubject: raw\r\nx-smtpeter-trackopens: true\r\n"
            "X-SMTPeter-TrackClicks: false\r\nX-Postwire-Tags: from-header, both\r\n"
            "x-smtpeter-inlinecss: yes\r\nX-Keep: me\r\n\r\n<p>body</p>\r\n")

    r = await gateway.http.post("/v1/send", params=token(account), json={
        "recipients": ["john@example.org", "other@example.net"], "mime": mime, "tags": ["both", "request"],
        "trackclicks": True})

    assert r.status_code == 200, r.text
    [env] = await inbound.read(account.account_id)
    assert list(env.recipients) == ["john@example.org", "other@example.net"]
    assert env.mail_from == "info@example.com"  # no envelope: the From address
    assert (env.options.track_opens, env.options.track_clicks, env.options.inline_css) == (True, False, True)
    assert list(env.tags) == ["both", "request", "from-header"]
    raw = env.body.inline
    assert b"smtpeter" not in raw.lower() and b"x-postwire" not in raw.lower()
    assert b"Bcc" not in raw and b"X-Keep: me\r\n" in raw
    assert f"<{env.message_id}@api.postwire.test>".encode() in raw  # Message-ID added
    assert raw.endswith(b"\r\n\r\n<p>body</p>\r\n")


async def test_v1_messages_take_option_headers_and_tracking_options(gateway: Gateway, account: NewCredentials,
                                                                    inbound: Inbound) -> None:
    mime = (b"From: a@example.com\r\nTo: b@example.org\r\nX-Smtpeter-TrackOpens: true\r\n"
            b"X-Postwire-PreventScam: on\r\nx-smtpeter-tags: x,y\r\nx-smtpeter-inlinecss: false\r\n"
            b"\r\nhi\r\n")
    r = await gateway.http.post("/v1/messages/mime", content=mime,
                                headers=gateway.auth(account, **{"Content-Type": "message/rfc822"}))
    assert r.status_code == 202, r.text
    mime_id = r.json()["id"]
    bad = await gateway.http.post("/v1/messages/mime",
                                  content=mime.replace(b"TrackOpens: true", b"TrackOpens: maybe"),
                                  headers=gateway.auth(account, **{"Content-Type": "message/rfc822"}))
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "invalid_option_header"
    r = await gateway.http.post("/v1/messages", headers=gateway.auth(account), json={
        "from": "a@example.com", "to": ["b@example.org"], "text": "t",
        "options": {"track_clicks": True, "track_opens": True, "track_bounces": False, "prevent_scam": True,
                    "max_deliver_time": "2030-01-02T03:04:05"}})
    assert r.status_code == 202, r.text
    tracked_id = r.json()["id"]
    r = await gateway.http.post("/v1/messages", headers=gateway.auth(account), json={
        "from": "a@example.com", "to": ["b@example.org"], "text": "t"})
    assert r.status_code == 202, r.text
    plain_id = r.json()["id"]

    sent = {env.message_id: env for env in await inbound.read(account.account_id, 3)}
    env = sent[mime_id]
    assert (env.options.track_opens, env.options.prevent_scam, env.options.inline_css) == (True, True, False)
    assert list(env.tags) == ["x", "y"] and b"x-smtpeter" not in env.body.inline.lower()
    o = sent[tracked_id].options
    assert (o.track_clicks, o.track_opens, o.track_bounces, o.prevent_scam) == (True, True, False, True)
    assert o.max_deliver_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    o = sent[plain_id].options
    assert (o.track_clicks, o.track_opens, o.track_bounces, o.prevent_scam) == (False, False, True, False)
    assert not o.HasField("max_deliver_time")


async def test_reply_to_in_camel_case_as_client_libraries_send_it(gateway: Gateway, account: NewCredentials,
                                                                   inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/send", params=token(account),
                                json=fields(replyTo="Replies <replies@example.com>"))
    assert r.status_code == 200, r.text
    [env] = await inbound.read(account.account_id)
    assert str(parse(env.body.inline)["Reply-To"]) == "Replies <replies@example.com>"
    both = await gateway.http.post("/v1/send", params=token(account),
                                   json=fields(replyto="a@example.com", replyTo="b@example.com"))
    assert both.status_code == 422, both.text  # one of them is left over: which one was meant is unclear


async def test_access_token_auth_and_it_is_never_logged(gateway: Gateway, account: NewCredentials,
                                                        make_account: MakeAccount, inbound: Inbound,
                                                        capfd: pytest.CaptureFixture[str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    other = await make_account()
    ok = await gateway.http.post("/v1/send", params=token(account), json=fields())
    wrong = await gateway.http.post("/v1/send", params={"access_token": account.api_key + "x"}, json=fields())
    none = await gateway.http.post("/v1/send", json=fields())
    # the header wins when both are given
    header_wins = await gateway.http.post("/v1/send", params={"access_token": "junk"}, json=fields(),
                                          headers=gateway.auth(other))
    bad_header = await gateway.http.post("/v1/send", params=token(account), json=fields(),
                                         headers={"Authorization": "Bearer pw_nope_nope"})
    listing = await gateway.http.get("/v1/events", params=token(account))

    assert ok.status_code == 200 and header_wins.status_code == 200 and listing.status_code == 200
    assert wrong.status_code == none.status_code == bad_header.status_code == 401
    assert wrong.json()["error"] == "unauthorized" and account.api_key not in wrong.text
    assert [e.account_id for e in await inbound.read(account.account_id)] == [account.account_id]
    assert [e.account_id for e in await inbound.read(other.account_id)] == [other.account_id]
    out, err = capfd.readouterr()
    server_logs = out + err + "\n".join(  # the test's own HTTP client logs its URLs: not ours
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    secret = account.api_key.split("_", 2)[2]  # pw_<key id>_<secret>; the secret may hold "_" itself
    assert "api.accepted" in server_logs  # the logs were captured (pytest even shows uvicorn's access log) …
    assert "access_token=***" in server_logs
    assert secret not in server_logs  # … and hold no key


@pytest.mark.parametrize(("body", "loc", "type_"), [
    (fields(extra={"Subject": "x"}), ["body", "extra"], "invalid_header_name"),
    (fields(extra={"x-ok": "a\r\nBcc: evil@example.com"}), ["body", "extra"], "header_injection"),
    (fields(tags=["has space"]), ["body", "tags"], "invalid_tag"),
    (fields(tags=["a;b"]), ["body", "tags"], "invalid_tag"),
    (fields(maxdelivertime="2030-01-02"), ["body", "maxdelivertime"], "invalid_datetime"),
    (fields(maxdelivertime="2030-13-02 00:00:00"), ["body", "maxdelivertime"], "invalid_datetime"),
    (fields(recipient=None), ["body"], "missing_recipients"),
    (fields(recipient="not an address"), ["body", "recipient"], "invalid_address"),
    (fields(recipients=["ok@example.org", "bad@"]), ["body", "recipients"], "invalid_address"),
    (fields(mime="From: a@example.com\r\n\r\nx"), ["body"], "conflicting_content"),
    (fields(**{"from": None}), ["body"], "missing_from"),
    (fields(text=None), ["body"], "missing_body"),
    (fields(subject="a\nb"), ["body", "subject"], "header_injection"),
    (fields(unsubscribe={"url": "http://example.com/u", "oneclick": True}), ["body", "unsubscribe"],
     "oneclick_needs_https"),
    (fields(attachments=[{"url": "https://example.com/a.pdf", "name": "a.pdf"}]), ["body", "attachments", 0],
     "unsupported"),
    (fields(attachments=[{"data": "!!", "name": "a"}]), ["body", "attachments", 0, "data"], "invalid_base64"),
    (fields(dsn={"notify": "NEVER,SUCCESS"}), ["body", "dsn", "notify"], "invalid_notify"),
    (fields(template=7), ["body", "template"], "unknown_template"),
    (fields(template="no-such-template"), ["body", "template"], "unknown_template"),
    (fields(template="9" * 30), ["body", "template"], "unknown_template"),
    (fields(data={"a": 1}, html="<p>{if $a}x</p>"), ["body", "html"], "template_syntax"),
    (fields(data={"a": 1}, subject="Hi {$a|}"), ["body", "subject"], "template_syntax"),
    (fields(data={"a": 1}, **{"from": "not an address"}), ["body", "from"], "invalid_address"),
    (fields(data={"a": 1}, **{"from": "{$sender}"}), ["body", "from"], "invalid_address"),
    (fields(data=[1]), ["body", "data"], "dict_type"),
    (fields(recipients={"bad@": {}}), ["body", "recipients"], "invalid_address"),
    (fields(data={}, mime="From: a@example.com\r\n\r\nx", text=None, **{"from": None}), ["body"],
     "conflicting_content"),
    (fields(data={"a": "x\u0000y"}), ["body", "data"], "nul_character"),
])
async def test_send_validation_names_the_field(gateway: Gateway, account: NewCredentials,
                                               body: dict[str, Any], loc: list[Any], type_: str,
                                               inbound: Inbound) -> None:
    r = await gateway.http.post("/v1/send", params=token(account), json={k: v for k, v in body.items()
                                                                         if v is not None})
    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer["error"] == "validation_error"
    assert (answer["detail"][0]["loc"], answer["detail"][0]["type"]) == (loc, type_)
    if type_ == "invalid_header_name":
        assert "Subject" in answer["message"]
    assert await inbound.count() == 0


async def test_send_malformed_bodies(gateway: Gateway, account: NewCredentials) -> None:
    def post(content: bytes, content_type: str) -> Any:
        return gateway.http.post("/v1/send", params=token(account), content=content,
                                 headers={"Content-Type": content_type})

    bad_json = await post(b'{"recipient": ', "application/json")
    not_object = await post(b"[1]", "application/json")
    conflict = await post(b"dsn=x&dsn[ret]=FULL", "application/x-www-form-urlencoded")
    mime_bad = await gateway.http.post("/v1/send", params=token(account), json={
        "recipient": "a@example.org", "mime": "no headers here\r\n\r\nbody"})
    csv = await post(b"a,b", "text/csv")

    assert bad_json.status_code == not_object.status_code == conflict.status_code == 422
    assert bad_json.json()["detail"][0]["type"] == "json_invalid"
    assert conflict.json()["detail"][0]["loc"] == ["body", "dsn[ret]"]  # the form field as sent
    assert mime_bad.status_code == 422 and mime_bad.json()["detail"][0]["loc"][:2] == ["body", "mime"]
    assert csv.status_code == 415


async def test_send_when_the_queue_is_down_is_503(start_gateway: StartGateway, nats_server: NatsServer,
                                                  account: NewCredentials) -> None:
    gateway = await start_gateway(publish_timeout_s=1.0)
    await nats_server.stop()
    await eventually(lambda: _status(gateway, "/readyz", 503))
    r = await gateway.http.post("/v1/send", params=token(account), json=fields())
    assert r.status_code == 503 and r.json()["error"] == "queue_unavailable"
    await nats_server.start()  # back on the same port: the gateway reconnects and takes mail again
    await eventually(lambda: _status(gateway, "/readyz", 200))
    again = await gateway.http.post("/v1/send", params=token(account), json=fields())
    assert again.status_code == 200, again.text


async def _status(gateway: Gateway, path: str, status: int) -> bool:
    return (await gateway.http.get(path)).status_code == status


# ------------------------------------------------------------------------------------------ /v1/resend


async def test_resend_sends_the_archived_message_again(gateway: Gateway, account: NewCredentials,
                                                       make_account: MakeAccount, js: JetStreamContext,
                                                       inbound: Inbound) -> None:
    raw = b"From: info@example.com\r\nTo: a@example.org\r\nSubject: again\r\n\r\n" + b"x" * 5000 + b"\r\n"
    original_id = new_message_id()
    ids = recipient_ids(original_id, ["a@example.org", "b@example.org"])
    stored = envelope_pb2.InboundMessage(
        message_id=original_id, account_id=account.account_id, mail_from="info@example.com",
        recipients=["a@example.org", "b@example.org"], source="smtp", subject="again", tags=["t1"],
        metadata={"k": "v"}, recipient_ids=ids,
        options=envelope_pb2.SendOptions(inline_css=True, track_opens=True, track_bounces=False),
        dsn=envelope_pb2.Dsn(ret="FULL", envid="E"))
    stored.options.max_deliver_time.FromDatetime(datetime(2020, 1, 1))  # long past: not carried over
    stored.recipient_dsn["b@example.org"].notify.append("SUCCESS")
    stored.body.CopyFrom(await BodyStore(js, 1024).put(f"{original_id}/original", raw))  # object store
    await archive(js, stored)

    r = await gateway.http.post("/v1/resend", params=token(account), json={"message": original_id})

    assert r.status_code == 200, r.text
    answer = r.json()
    assert list(answer.values()) == ["a@example.org", "b@example.org"]
    assert not set(answer) & set(ids.values())
    # a per-recipient id resends to that recipient only; a form body works too
    one = await gateway.http.post("/v1/resend", params=token(account), data={"message": ids["b@example.org"]})
    assert one.status_code == 200, one.text
    assert list(one.json().values()) == ["b@example.org"]

    sent = {env.message_id: env for env in await inbound.read(account.account_id, 2)}
    env = sent[next(iter(answer))]
    assert dict(env.recipient_ids) == {rcpt: mid for mid, rcpt in answer.items()}
    assert (env.mail_from, list(env.tags), dict(env.metadata)) == ("info@example.com", ["t1"], {"k": "v"})
    assert (env.options.inline_css, env.options.track_opens, env.options.track_bounces) == (True, True, False)
    assert not env.options.HasField("max_deliver_time")
    assert (env.dsn.ret, env.dsn.envid) == ("FULL", "E")
    assert list(env.recipient_dsn["b@example.org"].notify) == ["SUCCESS"]
    assert "a@example.org" not in env.recipient_dsn
    assert await BodyStore(js, 1 << 20).get(env.body) == raw
    env = sent[next(iter(one.json()))]
    assert list(env.recipients) == ["b@example.org"]
    assert list(env.recipient_dsn["b@example.org"].notify) == ["SUCCESS"]

    queued = await inbound.count()
    stranger = await make_account()
    theirs = await gateway.http.post("/v1/resend", params=token(stranger), json={"message": original_id})
    unknown = await gateway.http.post("/v1/resend", params=token(account), json={"message": new_message_id()})
    odd = await gateway.http.post("/v1/resend", params=token(account), json={"message": "a.b*"})
    assert theirs.status_code == unknown.status_code == odd.status_code == 404
    assert theirs.json().keys() == unknown.json().keys() == {"error", "message"}
    missing = await gateway.http.post("/v1/resend", params=token(account), json={})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "message"]
    assert await inbound.count() == queued  # nothing more was queued


# -------------------------------------------------------------------------------- /v1/events/{kind}/…


def _event(type_: str, account_id: str, at: datetime, *, message_id: str, recipient: str = "r@example.test",
           attempt: int = 0, **fields_: Any) -> envelope_pb2.Event:
    ev = make_event(type_, account_id=account_id, message_id=message_id, recipient=recipient, attempt=attempt,
                    **fields_)
    ev.at.FromDatetime(at)
    return ev


async def _store(sessions: Sessions, *events: envelope_pb2.Event) -> None:
    """As the recorder writes the events table."""
    async with sessions.begin() as s:
        for ev in events:
            await s.execute(insert(Event).values(
                event_id=ev.event_id, account_id=ev.account_id, message_id=ev.message_id,
                recipient=ev.recipient, type=ev.type, at=ev.at.ToDatetime(tzinfo=UTC),
                data=event_proto_data(ev)).on_conflict_do_nothing())


async def test_events_by_message_email_and_tags(gateway: Gateway, account: NewCredentials,
                                                make_account: MakeAccount, sessions: Sessions) -> None:
    aid = account.account_id
    m1, m2 = new_message_id(), new_message_id()
    t = datetime(2026, 10, 5, 12, tzinfo=UTC)
    both = ["news", "weekly"]
    jo = {"message_id": m1, "recipient": "Jo@example.org", "tags": both}
    x = {"message_id": m2, "recipient": "x@example.net", "tags": ["news"]}
    await _store(
        sessions,
        _event("accepted", aid, t, **jo, mail_from="s@x.test"),
        _event("deferred", aid, t + timedelta(minutes=1), **jo, smtp_code=451),
        _event("delivered", aid, t + timedelta(minutes=2), **jo, attempt=1, smtp_code=250,
               enhanced_status="2.0.0", response="ok", mx_host="mx.example.org"),
        _event("opened", aid, t + timedelta(minutes=3), **jo, client_ip="192.0.2.1", user_agent="Mail/1.0",
               unique=True),
        _event("clicked", aid, t + timedelta(minutes=4), **jo, url="https://example.com/a", link_index=0,
               client_ip="192.0.2.1", user_agent="Mail/1.0", unique=True),
        _event("bounced", aid, t + timedelta(hours=1), **x, reason="userunknown", hardbounce=True,
               smtp_code=550, enhanced_status="5.1.1", remote_mta="mx.example.net"),
        _event("complained", aid, t + timedelta(hours=2), **x, feedback_type="abuse"),
        _event("failed", aid, t + timedelta(hours=3), message_id=m2, recipient="y@example.net", tags=["news"],
               reason="expired", smtp_code=0),
        _event("suppressed", aid, t + timedelta(hours=4), message_id=m2, recipient="z@example.net",
               tags=["news"], reason="complaint"),
    )
    other = await make_account()
    await _store(sessions, _event("delivered", other.account_id, t, message_id=m1, recipient="jo@example.org",
                                  tags=both))
    window = {"start": "2026-10-01", "end": "2026-10-31 00:00:00"}

    async def get(path: str, creds: NewCredentials = account, **params: str) -> Any:
        r = await gateway.http.get(f"/v1/events/{path}", params={**token(creds), **window, **params})
        assert r.status_code == 200, r.text
        return r.json()

    by_id = await get(f"messageid/{m1}")
    assert [e["event"] for e in by_id] == ["attempt", "delivery", "open", "click"]  # deferral not listed
    assert all(e["type"] == e["event"] for e in by_id)
    attempt, delivery, opened, click = (e["data"] for e in by_id)
    for e in by_id:  # client libraries read the fields at the top level of each event: they are there too
        assert {k: e[k] for k in e["data"]} == e["data"]
    assert (by_id[1]["id"], by_id[1]["recipient"], by_id[1]["code"]) == (m1, "Jo@example.org", 250)
    assert attempt == {"id": m1, "recipient": "Jo@example.org", "time": "2026-10-05 12:00:00",
                       "tags": "news;weekly", "templateid": None, "envelope": "s@x.test"}
    assert {k: delivery[k] for k in ("attempt", "code", "status", "response", "mx")} == \
        {"attempt": 1, "code": 250, "status": "2.0.0", "response": "ok", "mx": "mx.example.org"}
    assert (opened["ip"], opened["useragent"], opened["unique"]) == ("192.0.2.1", "Mail/1.0", True)
    assert (click["url"], click["linkindex"], click["unique"]) == ("https://example.com/a", 0, True)

    assert [e["event"] for e in await get("email/jo@EXAMPLE.org")] == ["attempt", "delivery", "open", "click"]
    news = await get("tags/news")
    assert [e["event"] for e in news] == ["attempt", "delivery", "open", "click", "bounce", "response",
                                          "failure", "failure"]
    bounce, response, failure, suppressed = (e["data"] for e in news[4:])
    assert (bounce["reason"], bounce["hardbounce"], bounce["mta"], bounce["code"]) == \
        ("userunknown", True, "mx.example.net", 550)
    assert response["feedbacktype"] == "abuse"
    assert (failure["reason"], failure["suppressed"], suppressed["suppressed"]) == ("expired", False, True)
    # tags are AND-ed, from the path and from ?tags=
    assert len(await get("tags/news;weekly")) == 4
    assert len(await get("tags/news", tags="weekly")) == 4
    assert len(await get("email/x@example.net", tags="news;weekly")) == 0
    # the window: end exclusive; start alone means the month from it
    assert await get(f"messageid/{m1}", start="2026-10-05 12:01:00", end="2026-10-05 12:03:00") != []
    assert len(await get(f"messageid/{m1}", start="2026-10-05 12:00:01", end="2026-10-05 12:03:00")) == 1
    assert len(await get(f"messageid/{m1}", start="2026-09-10", end="")) == 4
    # another account sees nothing of it, and its own event only
    assert [e["data"]["id"] for e in await get(f"messageid/{m1}", other)] == [m1]
    assert [e["event"] for e in await get(f"messageid/{m1}", other)] == ["delivery"]
    assert [e["event"] for e in await get("tags/news", other)] == ["delivery"]

    for params, field in (({"start": "2026-10-01", "end": "2026-11-01 00:00:01"}, "end"),
                          ({"start": "2026-10-02", "end": "2026-10-01"}, "end"),
                          ({"start": "01-10-2026"}, "start")):
        r = await gateway.http.get(f"/v1/events/messageid/{m1}", params={**token(account), **params})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["query", field]
    r = await gateway.http.get(f"/v1/events/campaign/{m1}", params=token(account))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "kind"]
    assert (await gateway.http.get(f"/v1/events/messageid/{m1}")).status_code == 401


async def test_events_default_window_of_a_message_id(gateway: Gateway, account: NewCredentials,
                                                     sessions: Sessions) -> None:
    mid = new_message_id()
    sent = id_time(mid)
    assert sent is not None and abs(sent - datetime.now(UTC)) < timedelta(minutes=1)
    await _store(sessions, _event("delivered", account.account_id, sent + timedelta(days=20), message_id=mid),
                 _event("accepted", account.account_id, sent, message_id=mid))
    r = await gateway.http.get(f"/v1/events/messageid/{mid}", params=token(account))
    assert [e["event"] for e in r.json()] == ["attempt", "delivery"]
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 3, 31, tzinfo=UTC), -1) == datetime(2026, 2, 28, tzinfo=UTC)


# --------------------------------------------------------------------------------------------- stats


async def test_stats_totals_with_unique_opens_and_clicks(gateway: Gateway, account: NewCredentials,
                                                         make_account: MakeAccount,
                                                         sessions: Sessions) -> None:
    aid = account.account_id
    t = datetime(2026, 9, 10, 8, tzinfo=UTC)
    tagged: list[envelope_pb2.Event] = []
    for i in range(3):
        mid = new_message_id()
        tagged += [_event("accepted", aid, t, message_id=mid, recipient=f"r{i}@x.test", tags=["promo"]),
                   _event("opened", aid, t, message_id=mid, recipient=f"r{i}@x.test", tags=["promo"],
                          unique=i < 2)]
    mid = new_message_id()
    tagged += [_event("delivered", aid, t, message_id=mid, tags=["promo"]),
               _event("failed", aid, t, message_id=mid, recipient="f@x.test", tags=["promo"], reason="x"),
               _event("bounced", aid, t, message_id=mid, recipient="b@x.test", tags=["promo"], reason="y"),
               _event("suppressed", aid, t, message_id=mid, recipient="s@x.test", tags=["promo"]),
               _event("clicked", aid, t, message_id=mid, tags=["promo"], url="https://a", unique=True),
               _event("clicked", aid, t, message_id=mid, tags=["promo"], url="https://a", attempt=1)]
    untagged = [_event("accepted", aid, t, message_id=new_message_id()),
                _event("opened", aid, t + timedelta(days=1), message_id=new_message_id(), unique=True)]
    other = await make_account()
    await _store(sessions, *tagged, *untagged,
                 _event("accepted", other.account_id, t, message_id=new_message_id(), tags=["promo"]))
    span = {**token(account), "start": "2026-09-10T00:00:00Z", "end": "2026-09-12T00:00:00Z"}

    everything = (await gateway.http.get("/v1/stats", params=span)).json()
    promo = (await gateway.http.get("/v1/stats/promo", params=span)).json()
    same = (await gateway.http.get("/v1/stats", params={**span, "tag": "promo"})).json()
    theirs = (await gateway.http.get("/v1/stats/promo", params={**span, **token(other)})).json()

    assert everything["totals"] == {"messages": 4, "deliveries": 1, "bounces": 2, "opens": 4,
                                    "unique_opens": 3, "clicks": 2, "unique_clicks": 1}
    assert promo["totals"] == {"messages": 3, "deliveries": 1, "bounces": 2, "opens": 3, "unique_opens": 2,
                               "clicks": 2, "unique_clicks": 1}
    assert promo["totals"] == same["totals"] and promo["tag"] == "promo"
    assert [d["day"] for d in promo["stats"]] == ["2026-09-10", "2026-09-11"]
    assert (promo["stats"][0]["opened"], promo["stats"][0]["clicked"]) == (3, 2)  # the daily list is kept
    assert everything["stats"][1]["opened"] == 1
    assert theirs["totals"]["messages"] == 1 and theirs["totals"]["opens"] == 0
    assert (everything["start"], everything["end"]) == ("2026-09-10T00:00:00Z", "2026-09-12T00:00:00Z")


# ---------------------------------------------------------------------------------- forms and schema


def test_form_nesting() -> None:
    pairs = urlencoded_pairs(b"a=1&a=2&b[]=x&c[k]=v&d[1][n]=second&d[0][n]=first&e=&f=%C3%A9")
    assert nest(pairs) == {"a": ["1", "2"], "b": ["x"], "c": {"k": "v"},
                           "d": [{"n": "first"}, {"n": "second"}], "f": "é"}
    assert nest(urlencoded_pairs(b"0=a&1=b")) == {"0": "a", "1": "b"}
    for bad in (b"a=1&a[b]=2", b"a[b]=1&a=2", b"a[][b]=1", b"a]=1", b"a[b][c][d][e][f]=1"):
        with pytest.raises(FormError):
            nest(urlencoded_pairs(bad))
    with pytest.raises(FormError):
        urlencoded_pairs(b"a=%ff")


async def test_openapi_documents_the_new_routes(gateway: Gateway) -> None:
    spec = (await gateway.http.get("/openapi.json")).json()
    for path, method in (("/v1/send", "post"), ("/v1/resend", "post"), ("/v1/events/{kind}/{value}", "get"),
                         ("/v1/stats/{tag}", "get")):
        op = spec["paths"][path][method]
        assert {"200", "401", "422"} <= op["responses"].keys(), path
        assert {"AccessToken": []} in op["security"]
    assert "application/x-www-form-urlencoded" in spec["paths"]["/v1/send"]["post"]["requestBody"]["content"]
    assert "totals" in spec["components"]["schemas"]["StatsList"]["properties"]
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"].rsplit("/", 1)[1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    assert {"SmtpeterSend", "SmtpeterDsn", "SmtpeterResend", "SendAnswer"} <= refs
    assert refs <= spec["components"]["schemas"].keys()
