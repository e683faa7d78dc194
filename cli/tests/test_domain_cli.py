"""`postwire domain add|list` as a user runs them (a subprocess of the installed entry point)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from postwire.db.domains import get_domain
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.sender_domains import from_policy

POSTWIRE = str(Path(sys.executable).parent / "postwire")


def _run(*args: str, pg_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POSTWIRE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "POSTWIRE_DATABASE_URL": pg_url, **env}, check=False)


def _account(pg_url: str) -> dict[str, str]:
    out = _run("account", "create", f"dom-{uuid.uuid4().hex[:8]}", "--json", pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    creds: dict[str, str] = json.loads(out.stdout)
    return creds


def _name() -> str:
    return f"d{uuid.uuid4().hex[:10]}.example"


async def test_domain_add_json_prints_the_records_and_stores_a_working_key(pg_url: str) -> None:
    acct, name = _account(pg_url), _name()
    out = _run("domain", "add", name.upper(), "--account", acct["name"], "--json", pg_url=pg_url,
               POSTWIRE_SPF_INCLUDE="spf.relay.test", POSTWIRE_BOUNCE_DOMAIN="bounce.relay.test")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["name"] == name and data["account_id"] == acct["account_id"]
    assert data["dkim_algorithm"] == "rsa-sha256" and data["dkim_selector"].startswith("pw")
    assert "private" not in out.stdout.lower()
    records = {r["purpose"]: r for r in data["dns_records"]}
    assert records["dkim"]["type"] == "TXT"
    assert records["dkim"]["name"] == f"{data['dkim_selector']}._domainkey.{name}"
    assert records["dkim"]["value"] == f"v=DKIM1; k=rsa; p={data['dkim_public_key']}"
    assert len(base64.b64decode(data["dkim_public_key"])) > 256  # a 2048-bit SubjectPublicKeyInfo
    assert (records["spf"]["name"], records["spf"]["value"]) == (name, "v=spf1 include:spf.relay.test ~all")
    assert records["return_path"] == {"type": "CNAME", "name": f"pm-bounces.{name}",
                                      "value": "bounce.relay.test", "purpose": "return_path"}
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as s:
            row = await get_domain(s, acct["account_id"], name)
            assert row is not None and "BEGIN RSA PRIVATE KEY" in row.dkim_private_key
    finally:
        await engine.dispose()


def test_domain_add_ed25519_by_account_id_in_text(pg_url: str) -> None:
    acct, name = _account(pg_url), "bücher-" + _name()
    out = _run("domain", "add", name, "--account", acct["account_id"], "--algorithm", "ed25519",
               pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    ascii_name = "xn--" in out.stdout and out.stdout.split()[1]
    assert ascii_name and ascii_name.startswith("xn--")
    assert "Publish these DNS records" in out.stdout and "k=ed25519; p=" in out.stdout
    assert f"pm-bounces.{ascii_name}" in out.stdout and "bounces.postwire.local" in out.stdout


@pytest.mark.slow
def test_domain_list_filters_by_account(pg_url: str) -> None:
    a, b = _account(pg_url), _account(pg_url)
    names = sorted([_name(), _name()])
    for name in names:
        assert _run("domain", "add", name, "--account", a["name"], "--algorithm", "ed25519",
                    pg_url=pg_url).returncode == 0
    assert _run("domain", "add", _name(), "--account", b["name"], "--algorithm", "ed25519",
                pg_url=pg_url).returncode == 0
    out = _run("domain", "list", "--account", a["name"], "--json", pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [d["name"] for d in listed] == names
    assert all(len(d["dns_records"]) == 3 for d in listed)
    everyone = json.loads(_run("domain", "list", "--json", pg_url=pg_url).stdout)
    assert {d["account_id"] for d in everyone} >= {a["account_id"], b["account_id"]}


@pytest.mark.slow
def test_domain_errors_are_clear(pg_url: str) -> None:
    a, b = _account(pg_url), _account(pg_url)
    name = _name()
    assert _run("domain", "add", name, "--account", a["name"], "--algorithm", "ed25519",
                pg_url=pg_url).returncode == 0
    again = _run("domain", "add", name, "--account", a["name"], pg_url=pg_url)
    assert again.returncode == 1 and "already registered by this account" in again.stderr
    theirs = _run("domain", "add", name, "--account", b["name"], pg_url=pg_url)
    assert theirs.returncode == 1 and "already registered by another account" in theirs.stderr
    bad = _run("domain", "add", "not a domain", "--account", a["name"], pg_url=pg_url)
    assert bad.returncode == 2 and "not a valid domain" in bad.stderr
    nobody = _run("domain", "list", "--account", "no-such-account", pg_url=pg_url)
    assert nobody.returncode == 1 and "no account" in nobody.stderr


async def test_an_operator_trusts_a_domain_and_allows_an_account_any_from(pg_url: str) -> None:
    """`domain trust` and `account set --allow-unverified-from`: what ingest-smtp and the API then honour
    (their own tests send the mail)."""
    acct, name = _account(pg_url), _name()
    assert _run("domain", "add", name, "--account", acct["name"], pg_url=pg_url).returncode == 0
    listed = json.loads(_run("domain", "list", "--account", acct["name"], "--json", pg_url=pg_url).stdout)
    assert [d["verified_at"] for d in listed] == [None]
    assert "verified  no" in _run("domain", "list", "--account", acct["name"], pg_url=pg_url).stdout

    trusted = _run("domain", "trust", name, "--account", acct["name"], pg_url=pg_url)
    assert trusted.returncode == 0 and "verified" in trusted.stdout, trusted.stderr
    missing = _run("domain", "trust", _name(), "--account", acct["name"], pg_url=pg_url)
    assert missing.returncode == 1 and "no domain" in missing.stderr
    allowed = _run("account", "set", acct["name"], "--allow-unverified-from", "yes", pg_url=pg_url)
    assert allowed.returncode == 0 and "any domain" in allowed.stdout, allowed.stderr
    assert _run("account", "set", acct["name"], pg_url=pg_url).returncode == 2  # nothing to change

    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as s:
            policy = await from_policy(s, acct["account_id"])
    finally:
        await engine.dispose()
    assert policy.allow_any and policy.verified == {name}
