"""compose.build writes the usual message itself and leaves the rest to the email package: a reader (the
email package's parser) must see the same message either way."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import pytest

from postwire.core.addresses import Mailbox
from postwire.core.compose import Draft, Part, _build_plain, _build_with_email_package, build

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LONG_LINES = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40).strip()
DRAFTS = {
    "text": Draft(Mailbox("", "a@example.com"), to=[Mailbox("", "b@example.org")], subject="Hi",
                  text="Hello\n"),
    "long text lines": Draft(Mailbox("Ann Smith", "a@example.com"), to=[Mailbox("", "b@example.org")],
                             subject="Report", text=LONG_LINES + "\r\n\r\n  trailing space \nend"),
    "html only": Draft(Mailbox("", "a@example.com"), html="<style>p{color:red}</style><p>Hi</p>"),
    "both": Draft(Mailbox("", "a@example.com"), to=[Mailbox("", "b@example.org"), Mailbox("Bo", "c@x.org")],
                  cc=[Mailbox("", "d@x.org")], reply_to=[Mailbox("", "r@x.org")], subject="Both",
                  text="plain =3D not qp\n.dot line", html="<p>caf\u00e9 \u2603</p>",
                  headers=[("X-Campaign", "c-42"), ("List-Unsubscribe", "<mailto:u@x.org>")]),
    "unicode text": Draft(Mailbox("", "a@example.com"), text="Gr\u00fc\u00dfe aus K\u00f6ln\n\U0001f600"),
    "empty": Draft(Mailbox("", "a@example.com")),
}
SLOW_ONLY = {
    "encoded subject": Draft(Mailbox("", "a@example.com"), subject="Gr\u00fc\u00dfe", text="x"),
    "quoted name": Draft(Mailbox("Doe, John", "a@example.com"), text="x"),
    "long subject": Draft(Mailbox("", "a@example.com"), subject="word " * 30, text="x"),
    "attachment": Draft(Mailbox("", "a@example.com"), text="x",
                        attachments=[Part("a.txt", "text/plain", b"y")]),
}


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def view(msg: EmailMessage) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Header fields (without the random boundary) and each leaf part's type and decoded content."""
    fields = [(k, str(v)) for k, v in msg.items() if k.lower() != "content-type" or "boundary" not in str(v)]
    parts = [(p.get_content_type(), p.get_content()) for p in msg.walk() if not p.is_multipart()]
    return fields, parts


@pytest.mark.parametrize("name", list(DRAFTS))
def test_the_direct_writer_gives_what_the_email_package_gives(name: str) -> None:
    draft = DRAFTS[name]
    fast = _build_plain(draft, "01abc", "mail.example.test", NOW)
    assert fast is not None, "this draft should not need the email package"
    slow = _build_with_email_package(draft, "01abc", "mail.example.test", NOW)
    assert view(parse(fast)) == view(parse(slow))
    assert all(len(line) <= 998 for line in fast.split(b"\r\n"))
    assert fast.count(b"\n") == fast.count(b"\r\n")  # CRLF only, as SMTP wants it


@pytest.mark.parametrize("name", list(SLOW_ONLY))
def test_what_needs_encoding_or_folding_goes_through_the_email_package(name: str) -> None:
    draft = SLOW_ONLY[name]
    assert _build_plain(draft, "01abc", "mail.example.test", NOW) is None
    assert parse(build(draft, "01abc", "mail.example.test", NOW))["From"] is not None
