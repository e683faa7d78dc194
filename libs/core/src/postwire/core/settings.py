"""Settings shared by every service; each service subclasses :class:`PostwireSettings`.

All settings come from environment variables prefixed ``POSTWIRE_`` (12-factor). docs/configuration.md
lists every one of them; keep it in step with this file and the services' settings modules.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

VERP_KEY_FILE = "verp.key"
VERP_SECRET_MIN = 16


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
    # the domain of VERP return paths (MAIL FROM); its MX is the bounce service
    bounce_domain: str = "bounces.postwire.local"
    # HMAC key of VERP return paths, shared by the dispatcher and the bounce receiver: set it in
    # production (every replica must agree); unset, verp_secret_bytes() keeps one in <data_dir>/verp.key
    verp_secret: SecretStr | None = None
    # sending domains (postwire.db.domains): the host names in the DNS records customers publish, and
    # the DKIM selector of new keys (empty: "pw" + year and month, e.g. pw202611)
    spf_include: str = "spf.postwire.local"
    return_path_label: str = "pm-bounces"
    dkim_default_selector: str = ""
    # webhook URLs (postwire.db.webhooks, docs/webhooks.md), checked by the API and again by the notifier:
    # plain http, and hosts resolving to loopback/private/link-local/reserved addresses (SSRF), are
    # refused unless the operator allows them (local runs and tests with receivers on 127.0.0.1)
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    # how long POST /v1/resend can find a message (the ARCHIVE stream and the BODIES bucket keep it)
    message_retention_days: float = Field(default=7.0, gt=0)
    # tracking (docs/tracking.md): the base URL of click/open links when the From domain has no
    # tracking host of its own (the API's public URL), and how long links keep working
    tracking_base_url: str = "http://127.0.0.1:8080"
    tracking_retention_days: float = Field(default=90.0, gt=0)


def verp_secret_bytes(settings: PostwireSettings) -> bytes:
    """The VERP key: POSTWIRE_VERP_SECRET, else ``<data_dir>/verp.key``, created (mode 0600) on first use.

    The file fallback exists for the local run, where every service shares one data dir; in a cluster the
    services do not share a disk, so the secret must come from the environment (a Kubernetes Secret).
    """
    if settings.verp_secret is not None:
        value = settings.verp_secret.get_secret_value().encode()
    else:
        value = _read_or_create_key(settings.data_dir / VERP_KEY_FILE)
    if len(value) < VERP_SECRET_MIN:
        raise ValueError(f"the VERP secret must be at least {VERP_SECRET_MIN} characters")
    return value


def _read_or_create_key(path: Path) -> bytes:
    """Written to a private temporary file, then hard-linked into place: the link either creates the
    file with its whole content or fails because another process got there first, whose key then wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes().strip()
