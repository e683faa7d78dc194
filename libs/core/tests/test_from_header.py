"""Reading the From domains a message claims (postwire.core.from_header): what the check of verified
sending domains judges, so a mailbox hidden in a display name, a folded field or the body must not fool it."""

from __future__ import annotations

from postwire.core.from_header import header_from_domains
from postwire.core.intake import Submission
from postwire.v1 import envelope_pb2


def test_each_mailbox_of_the_from_field_counts() -> None:
    raw = (b"Subject: hi\r\nFrom: \"Sales <ceo@bank.example>\" <sales@Shop.Example>,\r\n"
           b" =?utf-8?q?J=C3=B6rg?= <jorg@eu.shop.example.>\r\nTo: a@b.example\r\n\r\nbody\r\n")
    assert header_from_domains(raw) == ["shop.example", "eu.shop.example"]


def test_only_the_top_level_header_block_is_read() -> None:
    raw = (b"Subject: hi\r\nFrom: a@shop.example\r\nReply-To: x@elsewhere.example\r\n\r\n"
           b"From: forged@bank.example\r\n")
    assert header_from_domains(raw) == ["shop.example"]


def test_a_field_merely_ending_in_from_is_not_from() -> None:
    raw = b"X-Original-From: a@bank.example\r\nResent-From: b@bank.example\r\nFrom: c@shop.example\r\n\r\n"
    assert header_from_domains(raw) == ["shop.example"]


def test_no_from_or_no_address_gives_nothing_to_check() -> None:
    assert header_from_domains(b"Subject: hi\r\n\r\nbody") == []
    assert header_from_domains(b"From: undisclosed\r\nSubject: hi\r\n\r\n") == []


def test_a_personalised_submission_is_judged_by_its_template_from() -> None:
    content = envelope_pb2.PersonalisedMessage(subject="hi", text="x", **{"from": "News <news@shop.example>"})
    sub = Submission(account_id="a", mail_from="", recipients=["r@x.example"],
                     raw=content.SerializeToString(), source="api",
                     personalisation=envelope_pb2.Personalisation())
    assert sub.from_domains() == ["shop.example"]
