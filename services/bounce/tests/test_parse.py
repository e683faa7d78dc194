"""parse_bounce and the CLI on real bounce mails from the shared corpus, plus a regression floor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from postwire.bounce.parser import parse_bounce

ROOT = Path(__file__).parents[3]
CORPUS = ROOT.parent / "shared" / "corpus" / "bounces"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared bounce corpus not present")


def parse(name: str) -> list[tuple[str | None, str, str | None, bool]]:
    results = parse_bounce((CORPUS / "eml" / name).read_bytes())
    return [(r.recipient, r.reason, r.status, r.hardbounce) for r in results]


def test_exim_body_text_two_recipients() -> None:
    assert parse("lhost-exim-02.eml") == [
        ("kijitora@example.jp", "userunknown", "5.1.1", True),
        ("sabatora@example.jp", "userunknown", "5.2.1", True),
    ]


def test_postfix_dsn_local_delivery_agent_failure() -> None:
    (result,) = parse_bounce((CORPUS / "eml" / "lhost-postfix-01.eml").read_bytes())
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
    (result,) = parse_bounce((CORPUS / "eml" / "lhost-amazonses-09.eml").read_bytes())
    assert (result.recipient, result.reason, result.replycode) == ("bounce@simulator.amazonses.com",
                                                                   "userunknown", 550)


def test_arf_complaint_lists_every_reported_recipient() -> None:
    results = parse_bounce((CORPUS / "eml" / "arf-17.eml").read_bytes())
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
    (result,) = parse_bounce((CORPUS / "eml" / "lhost-postfix-75.eml").read_bytes())
    assert (result.status, result.replycode) == ("4.3.0", 451)


def test_auto_reply_is_vacation() -> None:
    assert parse("rfc3834-01.eml") == [("kijitora@example.net", "vacation", None, False)]


@pytest.mark.parametrize("path", sorted((CORPUS / "not-bounce").glob("*.eml")), ids=lambda p: p.name)
def test_not_bounces_yield_nothing(path: Path) -> None:
    assert parse_bounce(path.read_bytes()) == []


@pytest.mark.parametrize("raw", [b"", b"\x00\xff garbage", b"Content-Type: multipart/report\n\n--x\n"])
def test_garbage_never_raises(raw: bytes) -> None:
    assert parse_bounce(raw) == []


def test_cli_prints_one_json_line_per_recipient() -> None:
    files = [str(CORPUS / "eml" / "lhost-exim-02.eml"), str(CORPUS / "not-bounce" / "is-not-bounce-01.eml"),
             str(CORPUS / "eml" / "lhost-yahoo-01.eml")]
    out = subprocess.run([sys.executable, "-m", "postwire.bounce.cli", *files],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {"file": files[0], "recipient": "kijitora@example.jp", "reason": "userunknown", "status": "5.1.1",
         "replycode": "550", "hardbounce": True},
        {"file": files[0], "recipient": "sabatora@example.jp", "reason": "userunknown", "status": "5.2.1",
         "replycode": "550", "hardbounce": True},
        {"file": files[2], "recipient": "kijitora@example.org", "reason": "userunknown", "status": "5.1.1",
         "replycode": "550", "hardbounce": True},
    ]


def test_corpus_accuracy_does_not_regress() -> None:
    """Floors just under what the classifier reaches today (see accuracy.py for the full report)."""
    sys.path.insert(0, str(ROOT / "services" / "bounce"))
    try:
        import accuracy  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    result = accuracy.evaluate(CORPUS)
    totals = result["totals"]
    assert accuracy.accuracy(totals, "all", "recipient") >= 95.5
    assert accuracy.accuracy(totals, "all", "reason") >= 87.5
    assert accuracy.accuracy(totals, "all", "hardbounce") >= 93.5
    assert accuracy.accuracy(totals, "all", "status") >= 88.0
    assert accuracy.accuracy(totals, "all", "replycode") >= 93.0
    assert result["false_positives"] == []
