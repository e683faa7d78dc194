"""Settings of the CLI and the local run (env prefix POSTWIRE_). Ports are those the local run uses."""

from __future__ import annotations

from postwire.core.settings import PostwireSettings


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
    restart_backoff_max_s: float = 30.0
