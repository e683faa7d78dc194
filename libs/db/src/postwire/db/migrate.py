"""Apply the Alembic history (``postwire db upgrade``, the local run and the Helm hook Job call this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def main() -> None:
    """``python -m postwire.db.migrate``: upgrade POSTWIRE_DATABASE_URL to head (the Helm hook Job)."""
    from postwire.core.settings import PostwireSettings

    upgrade(PostwireSettings().database_url)


if __name__ == "__main__":
    main()
