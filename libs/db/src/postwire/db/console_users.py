"""Console users and their sessions (docs/console.md).

A user belongs to one account and has a role: ``admin`` changes things, ``viewer`` only reads. Passwords
are argon2id hashes (as SMTP logins' are, postwire.db.accounts), checked in a thread: a hash takes tens of
milliseconds of CPU. A session is a random 256-bit token in an HttpOnly cookie; only its SHA-256 is
stored, with the CSRF token its forms must send back and an absolute expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.db.models import ConsoleSession, ConsoleUser

Role = Literal["admin", "viewer"]
ROLES: Final = ("admin", "viewer")
EMAIL: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_hasher = PasswordHasher()
# verified against when the user does not exist, so an unknown name costs what a wrong password costs
_DUMMY_HASH: Final = _hasher.hash("not a password of anyone")


class EmailTaken(Exception):
    """Another console user already logs in with this address."""


@dataclass(frozen=True)
class User:
    id: int
    account_id: str
    email: str
    role: Role

    @property
    def can_change(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(row: ConsoleUser) -> User:
    role: Role = "admin" if row.role == "admin" else "viewer"
    return User(row.id, row.account_id, row.email, role)


async def create_user(session: AsyncSession, account_id: str, email: str, role: Role,
                      password: str | None = None) -> tuple[User, str]:
    """The new user and its password (``password``, or a random one shown once)."""
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise ValueError(f"not an e-mail address: {email[:80]!r}")
    password = password or secrets.token_urlsafe(18)
    row = ConsoleUser(account_id=account_id, email=email, role=role,
                      password_hash=await asyncio.to_thread(_hasher.hash, password))
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise EmailTaken(email) from None
    return _user(row), password


async def users(session: AsyncSession, account_id: str) -> list[User]:
    rows = await session.execute(select(ConsoleUser).where(
        ConsoleUser.account_id == account_id, ConsoleUser.disabled_at.is_(None)).order_by(ConsoleUser.id))
    return [_user(r) for r in rows.scalars()]


async def remove_user(session: AsyncSession, account_id: str, user_id: int) -> bool:
    """Disable the user and end its sessions; False when the account has no such user."""
    row = (await session.execute(select(ConsoleUser).where(
        ConsoleUser.account_id == account_id, ConsoleUser.id == user_id,
        ConsoleUser.disabled_at.is_(None)))).scalar()
    if row is None:
        return False
    row.disabled_at = datetime.now(UTC)
    await session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))
    return True


async def verify(session: AsyncSession, email: str, password: str) -> User | None:
    """The user whose password this is; None for a wrong password, an unknown or a disabled user (each
    costing one argon2 verification, so timing does not tell them apart)."""
    row = (await session.execute(select(ConsoleUser).where(
        ConsoleUser.email == email.strip().lower(), ConsoleUser.disabled_at.is_(None)))).scalar()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    try:
        await asyncio.to_thread(_hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return None
    return _user(row) if row is not None else None


async def open_session(session: AsyncSession, user: User, lifetime: timedelta) -> tuple[str, Session]:
    """A new session for ``user``: the cookie's token and the session."""
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + lifetime
    csrf = secrets.token_urlsafe(32)
    session.add(ConsoleSession(token_hash=_digest(token), user_id=user.id, csrf=csrf, expires_at=expires))
    await session.flush()
    return token, Session(user, csrf, expires)


async def session_of(session: AsyncSession, token: str) -> Session | None:
    """The live session of a cookie's token (None when unknown, expired, or its user is disabled)."""
    if not token or len(token) > 100:
        return None
    row = (await session.execute(
        select(ConsoleSession, ConsoleUser).join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)
        .where(ConsoleSession.token_hash == _digest(token), ConsoleSession.expires_at > datetime.now(UTC),
               ConsoleUser.disabled_at.is_(None)))).first()
    if row is None:
        return None
    found, user = row
    return Session(_user(user), found.csrf, found.expires_at)


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _digest(token)))


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(delete(ConsoleSession).where(
        ConsoleSession.expires_at <= datetime.now(UTC)))
    return int(getattr(result, "rowcount", 0) or 0)
