"""Partial indexes: the models' ``postgresql_where`` is what the migrations built.

Alembic's comparison (test_migrate.py) matches an index by name and columns only, so a model whose
predicate differs from its migration's (or a migration that forgot it) would pass there while the
planner cannot use the index for the queries written against the model.
"""

from __future__ import annotations

from sqlalchemy import text

from postwire.db.engine import make_engine
from postwire.db.models import Base


def _normal(predicate: str) -> str:
    """``(template_id IS NOT NULL)`` as PostgreSQL prints it → ``template_id is not null``."""
    p = " ".join(predicate.split()).lower()
    while p.startswith("(") and p.endswith(")"):
        p = p[1:-1]
    return p


def _declared() -> dict[str, str]:
    out = {}
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            where = index.dialect_options["postgresql"]["where"]
            if where is not None:
                out[str(index.name)] = _normal(str(where))
    return out


async def test_partial_indexes_have_the_models_predicates(pg_url: str) -> None:
    declared = _declared()
    assert "ix_messages_account_template" in declared and "ix_templates_account_name" in declared
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY(:names)"),
                {"names": list(declared)})
            built = {name: _normal(pred or "") for name, pred in rows.all()}
    finally:
        await engine.dispose()
    assert built == declared
