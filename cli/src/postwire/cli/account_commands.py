"""`postwire account create|set|resume-bulk`, `postwire smtp-login set|show`, `postwire api-key set` and
`postwire user create` (console users)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import nats
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from postwire.core.events import publish_event
from postwire.db import bulk_pause, console_users
from postwire.db.accounts import (
    NewCredentials,
    SmtpLogin,
    get_smtp_login,
    set_api_key_stream,
    set_smtp_login_defaults,
    set_smtp_login_stream,
)
from postwire.db.accounts import create_account as _create
from postwire.db.console_users import User
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Account
from postwire.db.sender_domains import set_allow_unverified_from
from postwire.v1 import envelope_pb2


class AccountExists(Exception):
    pass


class LoginNotFound(Exception):
    pass


async def create_account(database_url: str, name: str, allow_unverified_from: bool = False) -> NewCredentials:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return await _create(session, name, allow_unverified_from=allow_unverified_from)
    except IntegrityError as e:
        raise AccountExists(name) from e
    finally:
        await engine.dispose()


async def show_login(database_url: str, username: str) -> SmtpLogin:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            login = await get_smtp_login(session, username)
    finally:
        await engine.dispose()
    if login is None:
        raise LoginNotFound(username)
    return login


# `--stream auto`: no default stream, the message decides (postwire.core.lanes)
AUTO_STREAM = "auto"


async def set_login(database_url: str, username: str, changes: Mapping[str, bool],
                    stream: str | None = None) -> SmtpLogin:
    """Change some default switches of a login and, when given, its default stream (``auto`` clears it),
    committed; the login as it is now."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            login = await set_smtp_login_defaults(session, username, changes)
            if login is not None and stream is not None:
                login = await set_smtp_login_stream(session, username,
                                                    None if stream == AUTO_STREAM else stream)
    finally:
        await engine.dispose()
    if login is None:
        raise LoginNotFound(username)
    return login


def login_as_json(login: SmtpLogin) -> dict[str, Any]:
    return {"username": login.username, "account_id": login.account_id, **login.defaults.as_dict(),
            "stream": login.default_stream or AUTO_STREAM}


def login_as_text(login: SmtpLogin) -> str:
    lines = [f"smtp login     {login.username} (account {login.account_id})"]
    for name, on in login.defaults.as_dict().items():
        lines.append(f"{name.replace('_', '-'):<15}{'on' if on else 'off'}")
    lines.append(f"{'stream':<15}{login.default_stream or AUTO_STREAM}")
    return "\n".join(lines)


class KeyNotFound(Exception):
    pass


async def set_key_stream(database_url: str, account_id: str, key_id: str, stream: str) -> None:
    """Set an API key's default stream (``auto`` clears it), committed."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            found = await set_api_key_stream(session, account_id, key_id,
                                             None if stream == AUTO_STREAM else stream)
    finally:
        await engine.dispose()
    if not found:
        raise KeyNotFound(key_id)


class AccountNotFound(Exception):
    pass


async def create_console_user(database_url: str, account: str, email: str, role: str,
                              password: str | None = None) -> tuple[User, str]:
    """A console user of the account named (or with the id) ``account``, and its password (shown once).
    Raises AccountNotFound, EmailTaken, or ValueError for an address that is not one."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            found = (await session.execute(select(Account).where(
                (Account.name == account) | (Account.id == account)))).scalar()
            if found is None:
                raise AccountNotFound(account)
            return await console_users.create_user(session, found.id, email,
                                                   "admin" if role == "admin" else "viewer", password)
    finally:
        await engine.dispose()


def parse_rate(value: str) -> Decimal | None:
    """``0.3%``, ``0.003`` or ``off`` (never pause): the complaint rate that pauses bulk mail."""
    text = value.strip().lower()
    if text in ("off", "never", "none"):
        return None
    try:
        rate = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a rate: {value!r} (write 0.3% or 0.003, or off)") from None
    if not Decimal(0) < rate <= Decimal(1):
        raise ValueError("the rate must be above 0 and at most 100 %")
    return rate


async def _account_id(session: Any, account: str) -> str:
    found = (await session.execute(select(Account.id).where(
        (Account.name == account) | (Account.id == account)))).scalar()
    if found is None:
        raise AccountNotFound(account)
    return str(found)


async def set_pause_threshold(database_url: str, account: str, rate: Decimal | None) -> None:
    """The account's automatic bulk pause threshold (None: never), committed."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            await bulk_pause.set_threshold(session, await _account_id(session, account), rate)
    finally:
        await engine.dispose()


async def set_unverified_from(database_url: str, account: str, allow: bool) -> None:
    """Allow (or stop allowing) the account to send From domains it has not verified, committed."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            await set_allow_unverified_from(session, await _account_id(session, account), allow)
    finally:
        await engine.dispose()


async def resume_bulk(database_url: str, nats_url: str, account: str) -> datetime | None:
    """Resume the account's bulk lane and publish ``bulk_resumed``; when it had been paused (None: it
    was not)."""
    engine = make_engine(database_url)
    nc = await nats.connect(nats_url, name="postwire-cli")
    try:
        js = nc.jetstream()

        async def publish(ev: envelope_pb2.Event) -> None:
            await publish_event(js, ev)

        async with make_sessionmaker(engine)() as session:
            return await bulk_pause.resume(session, await _account_id(session, account),
                                           "resumed with the CLI", publish)
    finally:
        await nc.close()
        await engine.dispose()
