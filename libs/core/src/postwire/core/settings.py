"""Settings shared by every service; each service subclasses :class:`PostwireSettings`.

All settings come from environment variables prefixed ``POSTWIRE_`` (12-factor). docs/configuration.md
lists every one of them; keep it in step with this file and the services' settings modules.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class PostwireSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="POSTWIRE_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql+asyncpg://postwire@127.0.0.1:5432/postwire"
    data_dir: Path = Path(".data")
    log_level: str = "INFO"
    ops_host: str = "127.0.0.1"
    # port of /healthz, /readyz and /metrics; 0 picks a free one
    ops_port: int = 0
    stream_replicas: int = 1
    # bodies larger than this go to the BODIES object store instead of the NATS payload
    inline_body_max: int = 512 * 1024
    max_message_size: int = 25 * 1024 * 1024
    shards: int = 16
    shutdown_grace_s: float = 20.0
