"""Transformer settings: the shared POSTWIRE_* ones plus where gRPC listens, which CSS engine to use, the
per-message limits and the optional TLS of the gRPC port."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import NonNegativeInt, PositiveFloat, model_validator

from postwire.core.settings import PostwireSettings


class TransformerSettings(PostwireSettings):
    """POSTWIRE_GRPC_HOST, POSTWIRE_GRPC_PORT, POSTWIRE_CSS_ENGINE, POSTWIRE_TRANSFORM_WORKERS,
    POSTWIRE_TRANSFORM_TIMEOUT_S, POSTWIRE_TRANSFORM_MEMORY_MB, POSTWIRE_TRANSFORM_IN_PROCESS,
    POSTWIRE_GRPC_TLS_* (+ shared)."""

    grpc_host: str = "127.0.0.1"
    # 0 picks a free port (tests); the bound port is logged and passed to serve()'s ``started``
    grpc_port: NonNegativeInt = 50051
    # engine used when a request leaves css_engine UNSPECIFIED
    css_engine: Literal["css-inline", "premailer"] = "css-inline"
    # worker processes that run the CPU-bound inlining; 0 means one per CPU
    transform_workers: NonNegativeInt = 0
    # a message whose transformation takes longer is refused (RESOURCE_EXHAUSTED: the dispatcher sends it
    # unchanged) and its worker killed and replaced. Keep it well below the dispatcher's
    # POSTWIRE_TRANSFORMER_TIMEOUT_S, which also covers the wait for a free worker
    transform_timeout_s: PositiveFloat = 10.0
    # address-space limit of each worker process in MiB (RLIMIT_AS; 0 = none): a message needing more is
    # refused instead of growing the pod. It includes the job thread's 256 MiB stack reservation and about
    # 100 MiB of code, so keep it at 512 or more; (pod memory limit - 200 MiB) / workers is a good value
    transform_memory_mb: NonNegativeInt = 1024
    # transform messages whose cost has a small upper bound in the server process (no worker round trip;
    # postwire.transformer.cost); false sends every message to a worker
    transform_in_process: bool = True
    # TLS of the gRPC port: certificate chain and key (PEM); with a client CA as well, clients must present
    # a certificate signed by it (mTLS). Unset: plaintext, as in the local run
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    grpc_tls_client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_files_go_together(self) -> Self:
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ValueError("POSTWIRE_GRPC_TLS_CERT_FILE and POSTWIRE_GRPC_TLS_KEY_FILE go together")
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise ValueError("POSTWIRE_GRPC_TLS_CLIENT_CA_FILE needs the server's certificate and key too")
        return self
