"""`postwire smtp-login set|show` as a user runs them (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from postwire.db.accounts import LoginDefaults, api_key_for, get_smtp_login
from postwire.db.engine import make_engine, make_sessionmaker

POSTWIRE = str(Path(sys.executable).parent / "postwire")


def _run(*args: str, pg_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POSTWIRE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "POSTWIRE_DATABASE_URL": pg_url}, check=False)


def _account(pg_url: str) -> dict[str, str]:
    out = _run("account", "create", f"login-{uuid.uuid4().hex[:8]}", "--json", pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    creds: dict[str, str] = json.loads(out.stdout)
    return creds


@pytest.mark.slow
async def test_smtp_login_set_changes_only_the_given_switches_and_show_prints_them(pg_url: str) -> None:
    acct = _account(pg_url)
    user = acct["smtp_username"]

    shown = _run("smtp-login", "show", user, "--json", pg_url=pg_url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"username": user, "account_id": acct["account_id"],
                                        **LoginDefaults().as_dict(), "stream": "auto"}

    out = _run("smtp-login", "set", user, "--track-clicks", "on", "--inline-css", "off", "--json",
               pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    expected = LoginDefaults(inline_css=False, track_clicks=True)
    assert json.loads(out.stdout) == {"username": user, "account_id": acct["account_id"],
                                      **expected.as_dict(), "stream": "auto"}

    out = _run("smtp-login", "set", user, "--track-opens", "on", "--track-bounces", "off", "--prevent-scam",
               "on", pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    expected = LoginDefaults(inline_css=False, track_clicks=True, track_opens=True, track_bounces=False,
                             prevent_scam=True)
    text = _run("smtp-login", "show", user, pg_url=pg_url)
    assert text.returncode == 0, text.stderr
    assert text.stdout == out.stdout
    assert text.stdout.splitlines() == [
        f"smtp login     {user} (account {acct['account_id']})",
        "inline-css     off", "track-clicks   on", "track-opens    on", "track-bounces  off",
        "prevent-scam   on", "stream         auto",
    ]

    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as session:
            login = await get_smtp_login(session, user)
    finally:
        await engine.dispose()
    assert login is not None and login.account_id == acct["account_id"] and login.defaults == expected


@pytest.mark.slow
def test_smtp_login_errors_are_clear(pg_url: str) -> None:
    acct = _account(pg_url)
    nobody = _run("smtp-login", "show", "no-such-login", pg_url=pg_url)
    assert nobody.returncode == 1 and "no SMTP login named 'no-such-login'" in nobody.stderr
    nobody = _run("smtp-login", "set", "no-such-login", "--track-opens", "on", pg_url=pg_url)
    assert nobody.returncode == 1 and "no SMTP login" in nobody.stderr
    nothing = _run("smtp-login", "set", acct["smtp_username"], pg_url=pg_url)
    assert nothing.returncode == 2 and "--track-clicks" in nothing.stderr
    bad = _run("smtp-login", "set", acct["smtp_username"], "--track-opens", "maybe", pg_url=pg_url)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.slow
async def test_default_streams_of_a_login_and_a_key(pg_url: str) -> None:
    acct = _account(pg_url)
    out = _run("smtp-login", "set", acct["smtp_username"], "--stream", "bulk", "--json", pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stream"] == "bulk"
    out = _run("smtp-login", "set", acct["smtp_username"], "--stream", "auto", "--json", pg_url=pg_url)
    assert json.loads(out.stdout)["stream"] == "auto"
    key = acct["api_key"]
    out = _run("api-key", "set", key, "--account", acct["account_id"], "--stream", "bulk", pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as session:
            owner = await api_key_for(session, key)
    finally:
        await engine.dispose()
    assert owner is not None and owner.default_stream == "bulk"
    other = _run("api-key", "set", key, "--account", "a-nobody", "--stream", "bulk", pg_url=pg_url)
    assert other.returncode == 1 and "has no API key" in other.stderr
    bad = _run("api-key", "set", key, "--account", acct["account_id"], "--stream", "promo", pg_url=pg_url)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
