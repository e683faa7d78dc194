"""Secrets: API keys stored hashed and compared in constant time, secrets shown once, and no secret and
no message body in the logs of a real gateway process during sends and failing requests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.db import accounts
from postwire.db.accounts import NewCredentials
from postwire.db.models import ApiKey, Domain, SmtpCredential
from postwire.testing.nats import NatsServer

from .conftest import Gateway, MakeAccount

Sessions = async_sessionmaker[AsyncSession]


async def test_api_keys_and_smtp_passwords_are_stored_hashed(account: NewCredentials,
                                                             sessions: Sessions) -> None:
    key_id, secret = account.api_key.removeprefix("pw_").split("_", 1)
    async with sessions() as s:
        key = await s.get(ApiKey, key_id)
        login = await s.get(SmtpCredential, account.smtp_username)
    assert key is not None and login is not None
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()  # 256 random bits: no salt needed
    assert secret not in key.secret_hash
    assert login.password_hash.startswith("$argon2id$") and account.smtp_password not in login.password_hash


async def test_api_keys_are_compared_in_constant_time(account: NewCredentials, sessions: Sessions) -> None:
    """The stored hash is compared with hmac.compare_digest, for a right and a wrong secret alike."""
    key_id, secret = account.api_key.removeprefix("pw_").split("_", 1)
    with mock.patch.object(accounts.hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        async with sessions() as s:
            assert await accounts.account_for_api_key(s, account.api_key) == account.account_id
            assert await accounts.account_for_api_key(s, f"pw_{key_id}_{secret[:-1]}x") is None
    assert compare.call_count == 2
    assert compare.call_args.args[1] == hashlib.sha256(f"{secret[:-1]}x".encode()).hexdigest()


async def test_webhook_secret_is_shown_once(gateway: Gateway, account: NewCredentials) -> None:
    h = gateway.auth(account)
    created = await gateway.http.post("/v1/webhooks", json={"url": "https://1.1.1.1/hook"}, headers=h)
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    for path in ("/v1/webhooks", f"/v1/webhooks/{created.json()['id']}"):
        r = await gateway.http.get(path, headers=h)
        assert r.status_code == 200 and secret not in r.text and "secret" not in r.text
    domain = await gateway.http.post("/v1/domains", json={"name": f"s-{uuid.uuid4().hex[:8]}.example"},
                                     headers=h)
    assert domain.status_code == 201 and "PRIVATE" not in domain.text.upper()


# --------------------------------------------------------------------------------------------- logs

MARKER = "BODY-MARKER-7f3a9c"  # in every message body sent below; must never be logged


def _text(path: Path) -> str:
    return path.read_text()


async def _start(log: Path, nats_url: str, pg_url: str, data_dir: Path) -> tuple[Any, str]:
    """``python -m postwire.api_gateway`` as deployed (JSON logs on stderr, into ``log``)."""
    env = {**os.environ, "POSTWIRE_NATS_URL": nats_url, "POSTWIRE_DATABASE_URL": pg_url,
           "POSTWIRE_HTTP_PORT": "0", "POSTWIRE_LOG_LEVEL": "DEBUG", "POSTWIRE_DATA_DIR": str(data_dir),
           "POSTWIRE_MAX_MESSAGE_SIZE": "100000", "POSTWIRE_PUBLISH_TIMEOUT_S": "1",
           "POSTWIRE_VERP_SECRET": "verp-secret-for-the-log-test-0123456789"}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "postwire.api_gateway", env=env,
                                                    stdout=out, stderr=out)
    for _ in range(300):
        for line in _text(log).splitlines():
            if '"api.listening"' in line:
                return proc, f"http://127.0.0.1:{json.loads(line)['port']}"
        if proc.returncode is not None:
            raise AssertionError(f"the gateway exited: {_text(log)}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"the gateway did not start: {_text(log)}")


async def _fail_inserts(sessions: Sessions, account_id: str, drop: bool = False) -> None:
    """A trigger that makes the database refuse this account's new domains and webhooks: a database
    failure in the middle of a request whose statement carries a DKIM private key or a signing secret."""
    fn = f"pw_fail_{account_id}"
    async with sessions.begin() as s:
        if drop:
            for table in ("domains", "webhooks"):
                await s.execute(text(f"DROP TRIGGER IF EXISTS {fn} ON {table}"))
            await s.execute(text(f"DROP FUNCTION IF EXISTS {fn}()"))
            return
        await s.execute(text(
            f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.account_id = '{account_id}' THEN RAISE EXCEPTION 'injected failure'; END IF; "
            "RETURN NEW; END $$"))
        for table in ("domains", "webhooks"):
            await s.execute(text(f"CREATE TRIGGER {fn} BEFORE INSERT ON {table} FOR EACH ROW "
                                 f"EXECUTE FUNCTION {fn}()"))


async def test_no_secret_and_no_body_in_the_logs(nats_server: NatsServer, pg_url: str,
                                                 make_account: MakeAccount, sessions: Sessions,
                                                 tmp_path: Path) -> None:
    a = await make_account()
    log = tmp_path / "gateway.log"
    proc, base = await _start(log, nats_server.url, pg_url, tmp_path / "data")
    h = {"Authorization": f"Bearer {a.api_key}"}
    statuses: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
                r = await http.request(method, path, **kwargs)
                statuses.append(r.status_code)
                return r

            # sends that succeed: JSON (text, html, an attachment), SMTPeter with ?access_token=, raw MIME
            r = await call("POST", "/v1/messages", headers=h, json={
                "from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": MARKER,
                "html": f"<p>{MARKER}</p>", "metadata": {"k": "v"},
                "attachments": [{"filename": "m.txt", "content": "Qk9EWS1NQVJLRVItN2YzYTlj"}]})
            assert r.status_code == 202, r.text
            r = await call("POST", "/v1/send", params={"access_token": a.api_key},
                           json={"recipient": "b@example.org", "from": "a@example.com", "text": MARKER})
            assert r.status_code == 200, r.text
            raw = f"From: a@example.com\r\nTo: b@example.org\r\nSubject: s\r\n\r\n{MARKER}\r\n".encode()
            r = await call("POST", "/v1/messages/mime", content=raw,
                           headers={**h, "Content-Type": "message/rfc822"})
            assert r.status_code == 202, r.text
            # secrets created: a webhook's signing secret, a domain's DKIM key
            r = await call("POST", "/v1/webhooks", headers=h, json={"url": "https://1.1.1.1/hook"})
            assert r.status_code == 201, r.text
            webhook_secret = r.json()["secret"]
            domain = f"logs-{uuid.uuid4().hex[:8]}.example"
            assert (await call("POST", "/v1/domains", headers=h, json={"name": domain})).status_code == 201
            # failing requests: wrong keys, invalid input, too large
            wrong = a.api_key[:-4] + "AAAA"
            await call("GET", "/v1/domains", headers={"Authorization": f"Bearer {wrong}"})
            await call("POST", "/v1/send", params={"access_token": wrong}, json={"text": MARKER})
            await call("POST", "/v1/messages", headers=h, json={"from": "nope", "to": ["b@example.org"],
                                                                "text": MARKER})
            await call("POST", "/v1/send", headers=h, json={"recipient": "b@example.org", "text": MARKER,
                                                             "mime": f"Subject: x\r\n\r\n{MARKER}"})
            await call("POST", "/v1/messages/mime", content=raw + MARKER.encode() * 10_000,
                       headers={**h, "Content-Type": "message/rfc822"})
            await call("POST", "/v1/messages", headers=h, content=f'{{"text": "{MARKER}", '.encode())
            # the database fails while storing a new DKIM key and a new signing secret
            await _fail_inserts(sessions, a.account_id)
            try:
                await call("POST", "/v1/domains", headers=h, json={"name": f"x{domain}"})
                await call("POST", "/v1/webhooks", headers=h, json={"url": "https://1.1.1.1/again"})
            finally:
                await _fail_inserts(sessions, a.account_id, drop=True)
            # the queue is down while a message is sent
            await nats_server.stop()
            await call("POST", "/v1/messages", headers=h, json={
                "from": "a@example.com", "to": ["b@example.org"], "text": MARKER})
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    async with sessions() as s:
        private_key = (await s.execute(select(Domain.dkim_private_key).where(Domain.name == domain))).scalar()
    assert private_key is not None and "PRIVATE KEY" in private_key

    logged = _text(log)
    assert statuses.count(401) == 2 and {413, 422, 503} <= set(statuses), statuses
    for event in ("api.accepted", "api.database_unavailable", "api.queue_unavailable", "api.stopped"):
        assert event in logged, event  # the failures were logged …
    secrets = {"API key": a.api_key, "API key secret": a.api_key.split("_", 2)[2],
               "wrong key": wrong.split("_", 2)[2], "SMTP password": a.smtp_password,
               "signing secret": webhook_secret, "any signing secret": "whsec_",
               "DKIM key": private_key.splitlines()[1], "any private key": "PRIVATE KEY",
               "message body": MARKER}
    leaked = [name for name, value in secrets.items() if value in logged]
    assert not leaked, f"in the logs: {leaked}"  # … without a secret or a body
