"""Accounts and their credentials: API keys (SHA-256 of a 256-bit secret) and SMTP logins (argon2id).

Secrets are returned once, at creation; only hashes are stored. Verification compares in constant time.
Each SMTP login also carries its default send switches (:class:`LoginDefaults`), which a message's
``x-smtpeter-*`` / ``X-Postwire-*`` headers override (docs/smtp.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core.ids import new_id
from postwire.core.lanes import STREAMS
from postwire.db.models import Account, ApiKey, SmtpCredential

_hasher = PasswordHasher()
API_KEY_PREFIX = "pw_"


@dataclass(frozen=True)
class LoginDefaults:
    """An SMTP login's default switches. The names are SendOptions' (and Submission's) field names; the
    defaults are what a login starts with, and what trusted-network mail (no login) gets."""

    inline_css: bool = True
    track_clicks: bool = False
    track_opens: bool = False
    track_bounces: bool = True
    prevent_scam: bool = False

    def as_dict(self) -> dict[str, bool]:
        """Every switch by name (per message on the SMTP path: ``asdict`` costs ten times as much)."""
        return {name: getattr(self, name) for name in SWITCHES}


SWITCHES = tuple(f.name for f in fields(LoginDefaults))


@dataclass(frozen=True)
class SmtpLogin:
    """A verified or looked-up SMTP login: never the password or its hash."""

    username: str
    account_id: str
    defaults: LoginDefaults
    # the lane of its messages that name none (postwire.core.lanes); None: decided by the message
    default_stream: str | None = None


def _login(row: SmtpCredential) -> SmtpLogin:
    return SmtpLogin(row.username, row.account_id, LoginDefaults(**{name: bool(getattr(row, name))
                                                                    for name in SWITCHES}),
                     row.default_stream)


def _check_stream(stream: str | None) -> None:
    if stream is not None and stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}: {' or '.join(STREAMS)}")


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


async def create_account(session: AsyncSession, name: str, *,
                         allow_unverified_from: bool = False) -> NewCredentials:
    """Create an account with one API key and one SMTP login; the caller commits. It may send From its
    verified domains only, unless ``allow_unverified_from`` (postwire.db.sender_domains)."""
    account = Account(id=new_id("a"), name=name, allow_unverified_from=allow_unverified_from)
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
    key = await api_key_for(session, token)
    return None if key is None else key.account_id


@dataclass(frozen=True)
class KeyOwner:
    """Whose an API key is, and its defaults."""

    account_id: str
    default_stream: str | None = None  # the lane of its messages that name none; None: by the message


async def api_key_for(session: AsyncSession, token: str) -> KeyOwner | None:
    """The account of an API key and the key's defaults, or None for an unknown, malformed or revoked key."""
    parts = _split_api_key(token)
    if parts is None:
        return None
    row = await session.get(ApiKey, parts[0])
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _sha256(parts[1])):
        return None
    return KeyOwner(row.account_id, row.default_stream)


async def set_api_key_stream(session: AsyncSession, account_id: str, key_id: str, stream: str | None) -> bool:
    """Set (None: clear) the default stream of one of the account's keys; False when it has no such key.
    The caller commits. Gateways see it once their key cache entry expires (POSTWIRE_API_KEY_CACHE_TTL_S)."""
    _check_stream(stream)
    result = await session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id)
                                   .values(default_stream=stream))
    return bool(getattr(result, "rowcount", 0))


async def verify_smtp_login(session: AsyncSession, username: str, password: str) -> SmtpLogin | None:
    """The login with its default switches when the password is right, else None."""
    row = await session.get(SmtpCredential, username)
    if row is None:
        # spend the same time as a real check: no user enumeration by timing
        await asyncio.to_thread(_hasher.hash, password)
        return None
    try:  # argon2 is deliberately slow: keep it off the event loop
        await asyncio.to_thread(_hasher.verify, row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return _login(row)


async def account_for_smtp_login(session: AsyncSession, username: str, password: str) -> str | None:
    login = await verify_smtp_login(session, username, password)
    return None if login is None else login.account_id


async def get_smtp_login(session: AsyncSession, username: str) -> SmtpLogin | None:
    row = await session.get(SmtpCredential, username)
    return None if row is None else _login(row)


async def set_smtp_login_defaults(session: AsyncSession, username: str,
                                  changes: Mapping[str, bool]) -> SmtpLogin | None:
    """Change some of a login's default switches (names from :data:`SWITCHES`); the login as it is now,
    or None when there is no such login. The caller commits. Running ingest-smtp replicas pick the
    change up for new sessions once their login cache entry expires (POSTWIRE_SMTP_AUTH_CACHE_TTL_S)."""
    unknown = set(changes) - set(SWITCHES)
    if unknown:
        raise ValueError(f"unknown switches: {', '.join(sorted(unknown))}")
    row = await session.get(SmtpCredential, username)
    if row is None:
        return None
    for name, value in changes.items():
        setattr(row, name, bool(value))
    await session.flush()
    return _login(row)


async def set_smtp_login_stream(session: AsyncSession, username: str, stream: str | None,
                                account_id: str | None = None) -> SmtpLogin | None:
    """Set (None: clear) a login's default stream; the login as it is now, or None when there is no such
    login (of ``account_id``, when given). The caller commits; ingest-smtp sees it as it sees the switches
    (its login cache)."""
    _check_stream(stream)
    row = await session.get(SmtpCredential, username)
    if row is None or (account_id is not None and row.account_id != account_id):
        return None
    row.default_stream = stream
    await session.flush()
    return _login(row)


# ------------------------------------------------------------------------- managing credentials (console)


@dataclass(frozen=True)
class KeyInfo:
    """An API key as it may be shown again: its id (the key's public part), never the secret."""

    id: str
    created_at: datetime
    revoked_at: datetime | None
    default_stream: str | None = None  # the lane of its messages that name none; None: by the message


async def api_keys(session: AsyncSession, account_id: str) -> list[KeyInfo]:
    rows = await session.execute(select(ApiKey).where(ApiKey.account_id == account_id)
                                 .order_by(ApiKey.created_at))
    return [KeyInfo(r.id, r.created_at, r.revoked_at, r.default_stream) for r in rows.scalars()]


async def create_api_key(session: AsyncSession, account_id: str) -> str:
    """A new key of the account: the whole token, shown once."""
    key_id, key_secret = new_id(), secrets.token_urlsafe(32)
    session.add(ApiKey(id=key_id, account_id=account_id, secret_hash=_sha256(key_secret)))
    await session.flush()
    return f"{API_KEY_PREFIX}{key_id}_{key_secret}"


async def revoke_api_key(session: AsyncSession, account_id: str, key_id: str) -> bool:
    """Revoke the account's key ``key_id`` (kept, marked); False when it has no such live key. Gateways
    honour it once their cache forgets the key (POSTWIRE_API_KEY_CACHE_TTL_S)."""
    result = await session.execute(update(ApiKey).where(
        ApiKey.account_id == account_id, ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now()))
    return bool(getattr(result, "rowcount", 0))


async def smtp_logins(session: AsyncSession, account_id: str) -> list[SmtpLogin]:
    rows = await session.execute(select(SmtpCredential).where(SmtpCredential.account_id == account_id)
                                 .order_by(SmtpCredential.created_at))
    return [_login(r) for r in rows.scalars()]


async def create_smtp_login(session: AsyncSession, account_id: str, account_name: str) -> tuple[str, str]:
    """A new SMTP login of the account: its username and password, the password shown once."""
    username, password = f"{account_name}-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    session.add(SmtpCredential(username=username, account_id=account_id, password_hash=password_hash))
    await session.flush()
    return username, password


async def delete_smtp_login(session: AsyncSession, account_id: str, username: str) -> bool:
    """Remove the account's login; False when it has none by that name. ingest-smtp keeps a verified
    login for POSTWIRE_SMTP_AUTH_CACHE_TTL_S (60 s): it stops working within that."""
    result = await session.execute(delete(SmtpCredential).where(
        SmtpCredential.account_id == account_id, SmtpCredential.username == username))
    return bool(getattr(result, "rowcount", 0))


async def account_name(session: AsyncSession, account_id: str) -> str:
    row = await session.get(Account, account_id)
    return row.name if row is not None else account_id
