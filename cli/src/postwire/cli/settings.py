"""Settings of the CLI and the local run (env prefix POSTWIRE_). Ports are those the local run uses."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import Field

from postwire.core.sandbox_store import DEFAULT_KEEP
from postwire.core.settings import PostwireSettings

LOCAL_DATA = ".data"  # the local run's data, at the root of the checkout


class CliSettings(PostwireSettings):
    host: str = "127.0.0.1"  # where the local run's services listen
    nats_port: int = 4222
    # set: use this NATS (one URL or a comma-separated list of a cluster's servers) instead of starting
    # the embedded nats-server; passed to every service as POSTWIRE_NATS_URL
    nats_external_url: str = ""
    smtp_port: int = 2525
    smtps_port: int = 4465  # implicit TLS submission (the self-signed certificate of the data dir)
    http_port: int = 8080
    grpc_port: int = 50051
    bounce_smtp_port: int = 2526  # the bounce receiver, the MX of the bounce domain
    ops_base_port: int = 9100  # service i gets ops_base_port + i for /metrics and /healthz
    dev_insecure_auth: bool = True  # the local run allows SMTP AUTH without TLS
    # the sandbox (postwire.cli.sandbox): a catch-all MX on loopback that every message is delivered to
    # instead of its recipients' MX hosts, kept in <data dir>/sandbox for the console; false: deliver
    # for real
    sandbox: bool = True
    sandbox_smtp_port: int = 2527
    sandbox_max_messages: int = Field(default=DEFAULT_KEEP, gt=0)  # the newest kept, older ones removed
    restart_backoff_max_s: float = 30.0


def checkout_root(start: Path) -> Path | None:
    """The Postwire checkout holding ``start``: the nearest folder upwards whose pyproject.toml is the
    workspace root (a uv workspace with postwire-cli among its sources); None outside any checkout."""
    for folder in (start, *start.parents):
        try:
            data = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        uv = data.get("tool", {}).get("uv", {})
        if "workspace" in uv and "postwire-cli" in uv.get("sources", {}):
            return folder
    return None


def local_data_dir(settings: PostwireSettings, cwd: Path) -> Path | None:
    """Where the local run keeps its data: POSTWIRE_DATA_DIR when set, else ``.data`` at the root of the
    checkout holding cwd, so that every folder of the checkout finds the run `make run` started; None
    outside a checkout."""
    if "POSTWIRE_DATA_DIR" in os.environ:
        return settings.data_dir.resolve()
    root = checkout_root(cwd.resolve())
    return root / LOCAL_DATA if root is not None else None
