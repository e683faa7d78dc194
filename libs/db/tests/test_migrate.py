"""`python -m postwire.db.migrate`, as the Helm hook Job runs it, against a fresh database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from postwire.db.engine import make_engine
from postwire.db.migrate import alembic_config
from postwire.db.models import Base
from postwire.testing.postgres import create_database


def alembic_script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(""))


async def test_the_module_upgrades_an_empty_database_to_head(pg_server: Any) -> None:
    url = create_database(pg_server)
    env = {**os.environ, "POSTWIRE_DATABASE_URL": url}
    for _ in range(2):  # the second run finds nothing to do: the hook Job runs on every upgrade
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "postwire.db.migrate"],
                                       env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = 'public'"))
            tables = {r[0] for r in rows}
            head = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()
    assert {"accounts", "events", "suppressions", "webhooks", "domains"} <= tables
    assert head == alembic_script().get_current_head()


# indexes on expressions, created with SQL in their migrations (0004, 0005): SQLAlchemy's models cannot
# declare them, so the comparison below does not see them in the models
EXPRESSION_INDEXES = {"ix_events_tags", "ix_events_account_recipient_lower",
                      "ix_messages_subject_trgm"}  # 0013, only where pg_trgm exists


def _declared(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


async def test_the_migrations_build_exactly_the_tables_the_models_declare(pg_url: str) -> None:
    """A model changed without its Alembic revision (or the other way round) is a database that differs
    from what the code expects after `make run` or the chart's migration Job."""
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"include_object": _declared}), Base.metadata))
    finally:
        await engine.dispose()
    assert diff == [], "models and migrations differ: " + "; ".join(map(str, diff))
