"""Accounts and their credentials: API keys (SHA-256 of a 256-bit secret) and SMTP logins (argon2id).

Secrets are returned once, at creation; only hashes are stored. Verification compares in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core.ids import new_id
from postwire.db.models import Account, ApiKey, SmtpCredential

_hasher = PasswordHasher()
API_KEY_PREFIX = "pw_"


@dataclass(frozen=True)
class NewCredentials:
    account_id: str
    name: str
    api_key: str
    smtp_username: str
    smtp_password: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split_api_key(token: str) -> tuple[str, str] | None:
    if not token.startswith(API_KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(API_KEY_PREFIX):].partition("_")
    return (key_id, secret) if sep and key_id and secret else None


async def create_account(session: AsyncSession, name: str) -> NewCredentials:
    """Create an account with one API key and one SMTP login; the caller commits."""
    account = Account(id=new_id("a"), name=name)
    key_id, key_secret = new_id(), secrets.token_urlsafe(32)
    username, password = f"{name}-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    session.add(account)
    await session.flush()
    session.add(ApiKey(id=key_id, account_id=account.id, secret_hash=_sha256(key_secret)))
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    session.add(SmtpCredential(username=username, account_id=account.id, password_hash=password_hash))
    await session.flush()
    return NewCredentials(account.id, name, f"{API_KEY_PREFIX}{key_id}_{key_secret}", username, password)


async def account_for_api_key(session: AsyncSession, token: str) -> str | None:
    """The account id an API key belongs to, or None for an unknown, malformed or revoked key."""
    parts = _split_api_key(token)
    if parts is None:
        return None
    row = await session.get(ApiKey, parts[0])
    if row is None or row.revoked_at is not None:
        return None
    return row.account_id if hmac.compare_digest(row.secret_hash, _sha256(parts[1])) else None


async def account_for_smtp_login(session: AsyncSession, username: str, password: str) -> str | None:
    row = (await session.execute(select(SmtpCredential).where(SmtpCredential.username == username))).scalar()
    if row is None:
        # spend the same time as a real check: no user enumeration by timing
        await asyncio.to_thread(_hasher.hash, password)
        return None
    try:  # argon2 is deliberately slow: keep it off the event loop
        await asyncio.to_thread(_hasher.verify, row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return row.account_id
