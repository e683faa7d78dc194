"""`postwire account create`."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from postwire.db.accounts import NewCredentials
from postwire.db.accounts import create_account as _create
from postwire.db.engine import make_engine, make_sessionmaker


class AccountExists(Exception):
    pass


async def create_account(database_url: str, name: str) -> NewCredentials:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return await _create(session, name)
    except IntegrityError as e:
        raise AccountExists(name) from e
    finally:
        await engine.dispose()
