"""parse_bounce and the CLI: on bounce mails written for these tests (postwire.testing's bounce_mails/)
and small synthetic notices, which always run, and on real bounce mails from the shared corpus with a
regression floor, which skip (saying why) when the corpus is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from postwire.bounce_classifier.parser import parse_bounce
from postwire.testing.corpus import bounce_mail, corpus_dir, corpus_params, corpus_path

ROOT = Path(__file__).parents[3]



def corpus_mail(name: str) -> bytes:
    """A real bounce mail of the corpus (the test skips when the corpus is absent)."""
    return corpus_path("bounces", "eml", name).read_bytes()


def parse(name: str) -> list[tuple[str | None, str, str | None, bool]]:
    results = parse_bounce(corpus_mail(name))
    return [(r.recipient, r.reason, r.status, r.hardbounce) for r in results]


@pytest.mark.parametrize(("name", "expected"), [
    ("postfix-userunknown.eml", ("jane.roe@example.org", "userunknown", "5.1.1", 550, True, None)),
    ("postfix-mailboxfull.eml", ("bob.full@example.net", "mailboxfull", "5.2.2", 552, False, None)),
    ("exchange-userunknown.eml", ("ken.doe@contoso.example", "userunknown", "5.1.10", 550, True, None)),
    ("arf-abuse.eml", ("mia.lane@isp.example", "feedback", None, None, False, "abuse")),
    ("auto-reply.eml", ("nina.park@example.com", "vacation", None, None, False, None)),
])
def test_fixture_mails_are_classified(name: str, expected: tuple[object, ...]) -> None:
    (r,) = parse_bounce(bounce_mail(name))
    assert (r.recipient, r.reason, r.status, r.replycode, r.hardbounce, r.feedbacktype) == expected


def test_an_ordinary_mail_yields_nothing() -> None:
    raw = (b"From: Someone <someone@example.org>\nTo: orders@shop.example\nSubject: Re: Your order 1001\n"
           b"Message-ID: <r1@example.org>\nIn-Reply-To: <order-1001@shop.example>\n\n"
           b"Thanks, it arrived today. The mail system here is slow, sorry for the late reply.\n")
    assert parse_bounce(raw) == []


def test_exim_body_text_two_recipients() -> None:
    assert parse("lhost-exim-02.eml") == [
        ("kijitora@example.jp", "userunknown", "5.1.1", True),
        ("sabatora@example.jp", "userunknown", "5.2.1", True),
    ]


def test_postfix_dsn_local_delivery_agent_failure() -> None:
    (result,) = parse_bounce(corpus_mail("lhost-postfix-01.eml"))
    assert result.recipient == "r@p351355.pool.example.ne.jp"  # Final-Recipient, not Original-Recipient
    assert result.reason == "mailererror" and result.hardbounce is False


def test_qmail_and_yahoo_notices() -> None:
    assert parse("lhost-qmail-01.eml") == [("kijitora@example.ne.jp", "userunknown", "5.5.0", True)]
    assert parse("lhost-yahoo-01.eml") == [("kijitora@example.org", "userunknown", "5.1.1", True)]


def test_office365_ndr() -> None:
    assert parse("lhost-office365-01.eml") == [("kijitora@example.com", "userunknown", "5.1.10", True)]


def test_japanese_carrier_mailbox_full() -> None:
    assert parse("lhost-kddi-01.eml")[0][:2] == ("kijitora@x0000000000000.dion.ne.jp", "mailboxfull")


def test_amazon_ses_json_notification() -> None:
    (result,) = parse_bounce(corpus_mail("lhost-amazonses-09.eml"))
    assert (result.recipient, result.reason, result.replycode) == ("bounce@simulator.amazonses.com",
                                                                   "userunknown", 550)


def test_arf_complaint_lists_every_reported_recipient() -> None:
    results = parse_bounce(corpus_mail("arf-17.eml"))
    assert [(r.recipient, r.reason, r.feedbacktype) for r in results] == [
        ("kijitora@example.com", "feedback", "abuse"),
        ("sabatora@example.net", "feedback", "abuse"),
    ]
    assert not any(r.hardbounce for r in results)


def test_filtering_gateway_user_unknown_without_status_is_filtered() -> None:
    # McAfee Email Gateway (X-NAI-Header): "550 x... No such user" with no X.1.1 status → filtered;
    # the same appliance passing on "550 5.1.1 … User unknown" → userunknown
    assert parse("lhost-mcafee-04.eml")[0][1:] == ("filtered", "5.0.0", False)
    assert parse("lhost-mcafee-02.eml")[0][1] == "userunknown"


def test_session_transcript_reports_the_failure_not_the_accepted_rcpt() -> None:
    (result,) = parse_bounce(corpus_mail("lhost-postfix-75.eml"))
    assert (result.status, result.replycode) == ("4.3.0", 451)


def test_auto_reply_is_vacation() -> None:
    assert parse("rfc3834-01.eml") == [("kijitora@example.net", "vacation", None, False)]


NOT_BOUNCES = corpus_dir() / "bounces" / "not-bounce"


@pytest.mark.parametrize("path", corpus_params(sorted(NOT_BOUNCES.glob("*.eml")), NOT_BOUNCES),
                         ids=lambda p: p.name)
def test_not_bounces_yield_nothing(path: Path) -> None:
    assert parse_bounce(path.read_bytes()) == []


@pytest.mark.parametrize("raw", [b"", b"\x00\xff garbage", b"Content-Type: multipart/report\n\n--x\n"])
def test_garbage_never_raises(raw: bytes) -> None:
    assert parse_bounce(raw) == []


def test_cli_prints_one_json_line_per_recipient() -> None:
    corpus = corpus_path("bounces")
    files = [str(corpus / "eml" / "lhost-exim-02.eml"), str(corpus / "not-bounce" / "is-not-bounce-01.eml"),
             str(corpus / "eml" / "lhost-yahoo-01.eml")]
    out = subprocess.run([sys.executable, "-m", "postwire.bounce_classifier", *files],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {"file": files[0], "recipient": "kijitora@example.jp", "reason": "userunknown", "status": "5.1.1",
         "replycode": "550", "hardbounce": True, "confidence": "high"},
        {"file": files[0], "recipient": "sabatora@example.jp", "reason": "userunknown", "status": "5.2.1",
         "replycode": "550", "hardbounce": True, "confidence": "medium"},
        {"file": files[2], "recipient": "kijitora@example.org", "reason": "userunknown", "status": "5.1.1",
         "replycode": "550", "hardbounce": True, "confidence": "high"},
    ]


def test_corpus_accuracy_does_not_regress() -> None:
    """Floors just under what the classifier reaches today (bench/bounce_accuracy.py: the full report)."""
    corpus = corpus_path("bounces")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bounce_accuracy as accuracy  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    result = accuracy.evaluate(corpus)
    totals = result["totals"]
    assert accuracy.accuracy(totals, "all", "recipient") >= 97.5
    assert accuracy.accuracy(totals, "all", "reason") >= 92.6
    assert accuracy.accuracy(totals, "all", "hardbounce") >= 97.4
    assert accuracy.accuracy(totals, "all", "status") >= 96.8
    assert accuracy.accuracy(totals, "all", "replycode") >= 94.8
    assert accuracy.accuracy(totals, "rfc3464", "status") >= 96.0
    assert result["false_positives"] == []


# --- the scanner on each MTA family's layout: small synthetic notices, then the corpus mails ------------

def _mail(body: str, *, to: str = "sender@example.net", headers: str = "") -> bytes:
    head = (f"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\nTo: {to}\n"
            f"Subject: Mail delivery failed: returning message to sender\n{headers}")
    return f"{head}\n{body}".encode()


def _got(raw: bytes) -> list[tuple[str | None, str]]:
    return [(r.recipient, r.reason) for r in parse_bounce(raw)]


def test_exim_indented_blocks_end_before_the_text_after_the_list() -> None:
    body = ("The following address(es) failed:\n\n"
            "  a@example.org\n"
            "    host mx.example.org [192.0.2.1]: 550 5.2.2 <a@example.org>... Mailbox Full\n"
            "  b@example.org\n    SMTP error from remote mail server after RCPT TO:<b@example.org>:\n"
            "    host mx.example.org [192.0.2.1]: 550 5.2.1 <b@example.org>... User Unknown\n\n"
            "A copy of this notice in English: a@example.org: Mailbox Full\n")
    assert _got(_mail(body)) == [("a@example.org", "mailboxfull"), ("b@example.org", "userunknown")]


def test_exim_indented_blocks_in_a_real_mail() -> None:
    assert _got(corpus_mail("lhost-mailru-03.eml"))[1] == ("sabineko@example.jp", "userunknown")


def test_mail_bounced_to_its_own_sender_keeps_the_listed_recipient() -> None:
    # the failed address is also the bounce's addressee (a mail sent to oneself): the layout names it
    body = ("A message that you sent could not be delivered to one or more of\nits recipients. "
            "The following address(es)\nfailed:\n\nself@example.fr:\n"
            "SMTP error from remote server for TEXT command, host: mx.example.fr "
            "reason: 550 5.1.1 No such user\n")
    assert _got(_mail(body, to="self@example.fr")) == [("self@example.fr", "userunknown")]


def test_mail_bounced_to_its_own_sender_in_a_real_mail() -> None:
    assert parse("lhost-einsundeins-03.eml")[0][:2] == ("xxxx@xxxx.fr", "spamdetected")


def test_postmaster_is_a_recipient_where_the_notice_says_so() -> None:
    body = ("There was an error delivering your mail to <postmaster@gone.example>.\n\n"
            "DNS lookup failure: host gone.example not found\n")
    assert _got(_mail(body)) == [("postmaster@gone.example", "hostunknown")]


def test_postmaster_is_a_recipient_in_real_mails() -> None:
    assert parse("lhost-dragonfly-04.eml")[0][:2] == ("postmaster@cx.libsisimai.org", "hostunknown")
    assert parse("lhost-opensmtpd-10.eml")[0][:2] == ("postmaster@cx.libsisimai.org", "hostunknown")


def test_postfix_rule_above_the_errors_and_contact_address() -> None:
    body = ("This is the Postfix program at host mx.example.net.\n\n"
            "For further assistance, please contact <help@example.net>\n\n"
            "-----------------------------------------\n\n"
            "<u@example.org>: host mx.example.org[192.0.2.2] said: 550\n"
            "    <u@example.org>: User unknown (in reply to\n    RCPT TO command)\n")
    (result,) = parse_bounce(_mail(body))
    assert (result.recipient, result.reason, result.replycode) == ("u@example.org", "userunknown", 550)


def test_postfix_rule_above_the_errors_in_a_real_mail() -> None:
    assert parse("lhost-postfix-07.eml")[0][0] == "kijitora@user.example.or.jp"


def test_exim_bad_address_list_names_the_bracketed_address() -> None:
    body = ("A message that you sent contained one or more recipient addresses that were\n"
            "incorrectly constructed:\n\n  a@example.com <b@example.net>: malformed address: "
            "<b@example.net> may not follow a@example.com\n")
    assert _got(_mail(body)) == [("b@example.net", "syntaxerror")]


def test_transcript_lines_before_the_failure_do_not_name_the_reason() -> None:
    body = ("The following recipient(s) could not be delivered:\n\n<u@example.org>: temporary failure\n\n"
            "Transcript of session follows.\n Out: 220 mx ESMTP\n In:  EHLO mx\n Out: 250-STARTTLS\n"
            " In:  DATA\n Out: 451 4.3.0 Error: queue file write error\n")
    (result,) = parse_bounce(_mail(body))
    assert (result.reason, result.status, result.replycode) == ("systemerror", "4.3.0", 451)


_DSN = """Content-Type: multipart/report; report-type=delivery-status; boundary="B{n}"

--B{n}
Content-Type: text/plain

Delivery failed.

--B{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {diag}

--B{n}--
"""


def test_mbox_of_several_reports_yields_each() -> None:
    one = _mail(_DSN.format(n=1, rcpt="a@example.org", status="5.1.1", diag="550 5.1.1 unknown"))
    two = _mail(_DSN.format(n=2, rcpt="b@example.org", status="5.2.2", diag="552 5.2.2 mailbox full"))
    raw = one + b"\nFrom MAILER-DAEMON  Thu Apr 29 23:34:45 2015\n" + two
    assert _got(raw) == [("a@example.org", "userunknown"), ("b@example.org", "mailboxfull")]


def test_mbox_of_several_reports_in_a_real_mail() -> None:
    assert [r[0] for r in parse("rfc3464-28.eml")] == ["kijitora@neko.example.jp", "info@neko.example.jp"]


def test_report_forwarded_as_an_attachment_is_read() -> None:
    inner = _mail(_DSN.format(n=1, rcpt="a@example.org", status="5.1.1", diag="550 5.1.1 unknown"))
    raw = _mail("Content-Type: multipart/mixed; boundary=\"O\"\n\n--O\nContent-Type: text/plain\n\n"
                "----- The following addresses had permanent delivery errors -----\n\n--O\n"
                "Content-Type: message/rfc822\n\n" + inner.decode() + "\n--O--\n")
    assert _got(raw) == [("a@example.org", "userunknown")]


def test_report_forwarded_as_an_attachment_in_a_real_mail() -> None:
    assert parse("lhost-x5-01.eml") == [("kijitora@neko.example.org", "userunknown", "5.1.1", True)]


def test_folded_content_type_without_semicolon_is_still_text() -> None:
    assert parse("lhost-x1-02.eml")[0][0] == "kijitora@example.org"


def test_vague_status_of_the_mail_is_reported_as_is() -> None:
    diag = "550 no such user here (in reply to RCPT TO command)"
    raw = _mail(_DSN.format(n=1, rcpt="a@example.org", status="5.0.0", diag=diag))
    (result,) = parse_bounce(raw)
    assert (result.reason, result.status, result.hardbounce) == ("userunknown", "5.0.0", True)


def test_user_unknown_without_the_rcpt_stage_or_an_x11_status_is_a_filter() -> None:
    # the same words with no stage and a vague status: a filter may have used them (Sisimai's filtered)
    raw = _mail(_DSN.format(n=1, rcpt="a@example.org", status="5.0.0", diag="550 no such user here"))
    (result,) = parse_bounce(raw)
    assert (result.reason, result.status, result.hardbounce) == ("filtered", "5.0.0", False)


def test_empty_typed_diagnostic_falls_back_to_the_notice() -> None:
    # Sendmail's warning DSN: "Diagnostic-Code: SMTP;" and the story in the transcript
    assert parse_bounce(corpus_mail("lhost-sendmail-29.eml"))[0].replycode == 421
    assert parse("lhost-sendmail-29.eml")[0][1] == "expired"


_ALIAS_DSN = b"""From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>
To: <sender@example.net>
Subject: Returned mail: see transcript for details
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

   ----- The following addresses had permanent fatal errors -----
<list@example.org>

   ----- Transcript of session follows -----
... while talking to mx.example.org.:
<<< 554 mx.example.org - a problem occurred (BL)
554 5.0.0 Service unavailable

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: RFC822; member-7@example.org
Action: failed
Status: 5.5.0
Diagnostic-Code: SMTP; 554 mx.example.org - a problem occurred (BL)

--b--
"""


def test_one_recipient_under_another_name_in_the_notice_gets_the_notices_description() -> None:
    # Sendmail lists the address it was given (an alias it expanded) in the notice and the expanded one
    # in the report: one failure each, so the notice's transcript (refused at the greeting) is its own
    (result,) = parse_bounce(_ALIAS_DSN)
    assert (result.recipient, result.reason) == ("member-7@example.org", "blocked")
