"""The `postwire` command as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from postwire.db.accounts import account_for_api_key, account_for_smtp_login
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.testing.corpus import BOUNCE_MAILS, corpus_path

POSTWIRE = str(Path(sys.executable).parent / "postwire")
# bounce mails written for the bounce service's tests (see the README there)
BOUNCE_FIXTURES = BOUNCE_MAILS


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POSTWIRE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def test_inline_css_prints_the_document_with_styles_inlined(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><head><style>p { color: red }</style></head><body><p>Hi</p></body></html>")
    extra = tmp_path / "extra.css"
    extra.write_text("p { font-weight: bold }")
    out = _run("inline-css", str(page), "--css", str(extra))
    assert out.returncode == 0, out.stderr
    assert "color: red" in out.stdout and "font-weight: bold" in out.stdout
    assert '<p style="' in out.stdout


async def test_account_create_json_prints_working_credentials(pg_url: str) -> None:
    out = _run("account", "create", "cli-test", "--json", env={"POSTWIRE_DATABASE_URL": pg_url})
    assert out.returncode == 0, out.stderr
    creds = json.loads(out.stdout)
    assert set(creds) >= {"api_key", "smtp_username", "smtp_password"}
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as session:
            account = await account_for_api_key(session, creds["api_key"])
            assert account is not None
            user, password = creds["smtp_username"], creds["smtp_password"]
            assert await account_for_smtp_login(session, user, password) == account
            assert await account_for_smtp_login(session, creds["smtp_username"], "wrong") is None
            assert await account_for_api_key(session, creds["api_key"] + "x") is None
    finally:
        await engine.dispose()


def test_a_second_account_with_the_same_name_is_refused_clearly(pg_url: str) -> None:
    env = {"POSTWIRE_DATABASE_URL": pg_url}
    assert _run("account", "create", "dup-name", "--json", env=env).returncode == 0
    again = _run("account", "create", "dup-name", "--json", env=env)
    assert again.returncode != 0
    assert "already exists" in again.stderr


def test_bounce_classify_prints_the_reason_of_each_bounced_recipient(tmp_path: Path) -> None:
    unknown, full, exchange = (str(BOUNCE_FIXTURES / name) for name in (
        "postfix-userunknown.eml", "postfix-mailboxfull.eml", "exchange-userunknown.eml"))
    ordinary = tmp_path / "reply.eml"
    ordinary.write_text("From: someone@example.org\nTo: orders@shop.example\nSubject: Re: order 1001\n\n"
                        "Thanks, it arrived.\n")
    out = _run("bounce", "classify", unknown, str(ordinary), full, exchange)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows == [  # in argument order, nothing for the mail that is not a bounce
        {"file": unknown, "recipient": "jane.roe@example.org", "reason": "userunknown", "status": "5.1.1",
         "replycode": "550", "hardbounce": True, "confidence": "high"},
        {"file": full, "recipient": "bob.full@example.net", "reason": "mailboxfull", "status": "5.2.2",
         "replycode": "552", "hardbounce": False, "confidence": "high"},
        # 5.1.10 is Exchange's own code (RFC 3463 stops at 5.1.8): the text decides, so "medium"
        {"file": exchange, "recipient": "ken.doe@contoso.example", "reason": "userunknown",
         "status": "5.1.10", "replycode": "550", "hardbounce": True, "confidence": "medium"},
    ]


def test_bounce_classify_prints_one_json_line_per_bounced_recipient() -> None:
    corpus = corpus_path("bounces")
    bounce, not_bounce = corpus / "eml" / "lhost-postfix-01.eml", next((corpus / "not-bounce").iterdir())
    out = _run("bounce", "classify", str(bounce), str(not_bounce))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["file"] == str(bounce) for r in rows)  # nothing for the non-bounce
    assert set(rows[0]) == {"file", "recipient", "reason", "status", "replycode", "hardbounce", "confidence"}
    assert (rows[0]["recipient"], rows[0]["reason"]) == ("r@p351355.pool.example.ne.jp", "mailererror")
