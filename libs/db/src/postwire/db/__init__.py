"""PostgreSQL, the system of record: SQLAlchemy models, the one Alembic history, and store functions."""
