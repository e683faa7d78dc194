"""Bounce forwarding without servers: RFC 3461 rules and the RFC 3464 report built from an event
(forwarding end to end, through the receiver, the recorder and a real SMTP sink: test_receiver.py)."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message
from typing import Any

import pytest

from postwire.bounce_classifier.parser import parse_bounce
from postwire.bounce_forwarding.forwarder import POLICY, DsnRequest, forward_message, wanted
from postwire.core.events import make_event
from postwire.v1 import envelope_pb2


@pytest.mark.parametrize(("event_type", "notify", "expected"), [
    ("bounced", (), True),  # no NOTIFY: failures only (RFC 3461 4.1)
    ("failed", (), True),
    ("suppressed", (), True),
    ("delivered", (), False),
    ("deferred", (), False),
    ("bounced", ("NEVER",), False),
    ("failed", ("never",), False),
    ("bounced", ("SUCCESS",), False),  # NOTIFY given without FAILURE
    ("bounced", ("DELAY",), False),
    ("bounced", ("FAILURE", "DELAY"), True),
    ("deferred", ("FAILURE", "DELAY"), True),
    ("delivered", ("SUCCESS", "FAILURE"), True),
    ("delivered", ("FAILURE",), False),
    ("complained", ("NEVER",), True),  # a complaint is not a delivery status notification
    ("opened", (), False),
    ("accepted", ("SUCCESS",), False),
])
def test_notify_decides_what_is_forwarded(event_type: str, notify: tuple[str, ...], expected: bool) -> None:
    assert wanted(event_type, DsnRequest(notify=notify)) is expected


def _event(event_type: str, **fields: Any) -> envelope_pb2.Event:
    return make_event(event_type, account_id="a1", message_id="m1", recipient="jane@example.org", **fields)


def _parse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(policy=POLICY), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _blocks(msg: EmailMessage) -> list[Message]:
    [status] = [p for p in msg.iter_parts() if p.get_content_type() == "message/delivery-status"]
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return blocks


REPORT = (b"From: MAILER-DAEMON@mx.example.org\r\nSubject: failure\r\nMIME-Version: 1.0\r\n"
          b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
          b"--b\r\nContent-Type: text/plain\r\n\r\nNo such user here.\r\n"
          b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
          b"Final-Recipient: rfc822; jane@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
          b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: Hello\r\nMessage-ID: <h@c.test>\r\n"
          b"\r\nA BODY THAT HAS NO PLACE HERE\r\n--b--\r\n")


def test_rfc822_headers_part_keeps_only_the_header_block() -> None:
    ev = _event("bounced", reason="userunknown", hardbounce=True, enhanced_status="5.1.1", smtp_code=550)
    msg = _parse(forward_message(ev, REPORT, "to@c.test", "postmaster@b.test"))
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    headers = list(msg.iter_parts())[2].get_content()
    assert "Message-ID: <h@c.test>" in headers and "NO PLACE" not in headers
    summary = msg.get_body(("plain",))
    assert summary is not None and "No such user here." in summary.get_content()


def test_fields_cannot_inject_headers_and_stay_ascii() -> None:
    ev = _event("failed", smtp_code=550, enhanced_status="5.7.1",
                response="5.7.1 Nachricht abgelehnt: zu groß\r\nX-Injected: yes")
    request = DsnRequest(envid="env\r\nBcc: someone@evil.test", orcpt="jane@example.org")
    msg = _parse(forward_message(ev, None, "to@c.test", "postmaster@b.test", request, "mx.b.test"))
    per_message, per_rcpt = _blocks(msg)
    assert per_message["Reporting-MTA"] == "dns; mx.b.test"
    assert per_message["Original-Envelope-Id"] == "env Bcc: someone@evil.test" and "Bcc" not in per_message
    assert per_rcpt["Original-Recipient"] == "rfc822; jane@example.org"  # an ORCPT without its type
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.7.1 Nachricht abgelehnt: zu gro? X-Injected: yes"
    assert "X-Injected" not in per_rcpt
    summary = msg.get_body(("plain",))
    assert summary is not None and "zu groß" in summary.get_content()  # the summary keeps the text


def test_a_report_postwire_wrote_parses_as_the_bounce_it_reports() -> None:
    ev = _event("failed", smtp_code=550, enhanced_status="5.1.1", response="5.1.1 user unknown",
                mx_host="mx.example.org", reason="userunknown", hardbounce=True)
    raw = forward_message(ev, None, "to@c.test", "postmaster@b.test").as_bytes(policy=POLICY)
    [result] = parse_bounce(raw)
    assert (result.recipient, result.status, result.reason, result.action) == (
        "jane@example.org", "5.1.1", "userunknown", "failed")


def test_statuses_and_actions_for_what_postwire_saw_itself() -> None:
    cases = {"delivered": ("relayed", "2.0.0"), "deferred": ("delayed", "4.0.0"),
             "suppressed": ("failed", "5.0.0"), "failed": ("failed", "5.0.0")}
    for event_type, expected in cases.items():
        per_rcpt = _blocks(_parse(forward_message(_event(event_type, reason="x"), None, "t@c.test",
                                                  "p@b.test")))[1]
        assert (per_rcpt["Action"], per_rcpt["Status"]) == expected, event_type
    per_rcpt = _blocks(_parse(forward_message(_event("suppressed", reason="userunknown"), None, "t@c.test",
                                              "p@b.test")))[1]
    assert per_rcpt["Diagnostic-Code"] == "X-Postwire; address suppressed (userunknown)"


def test_plain_text_notice_is_quoted_unless_only_headers_may_come_back() -> None:
    notice = (b"From: MAILER-DAEMON@q.test\r\nSubject: failure notice\r\n\r\n"
              b"Sorry.\r\n--- copy of the message ---\r\nBODY\r\n")
    ev = _event("bounced", reason="userunknown", hardbounce=True)
    full = _parse(forward_message(ev, notice, "t@c.test", "p@b.test"))
    hdrs = _parse(forward_message(ev, notice, "t@c.test", "p@b.test", DsnRequest(ret="HDRS")))
    assert [p.get_content_type() for p in full.iter_parts()] == ["text/plain", "message/delivery-status"]
    full_text, hdrs_text = full.get_body(("plain",)), hdrs.get_body(("plain",))
    assert full_text is not None and "BODY" in full_text.get_content()
    assert hdrs_text is not None and "BODY" not in hdrs_text.get_content()


def test_complaints_keep_the_report_attached() -> None:
    arf = b"From: fbl@isp.test\r\nSubject: complaint\r\n\r\nabuse report\r\n"
    msg = _parse(forward_message(_event("complained", feedback_type="abuse"), arf, "t@c.test", "p@b.test",
                                 DsnRequest(notify=("NEVER",), ret="HDRS")))
    assert msg.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in msg.iter_attachments()] == ["message/rfc822"]


def test_the_same_event_gives_the_same_message_id() -> None:
    ev = _event("failed")
    first, again = (forward_message(ev, None, "t@c.test", "p@b.test")["Message-ID"] for _ in range(2))
    assert first == again and first.endswith("@b.test>")
