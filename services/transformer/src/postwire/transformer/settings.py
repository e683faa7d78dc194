"""Transformer settings: the shared POSTWIRE_* ones plus where gRPC listens and which CSS engine to use."""

from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeInt

from postwire.core.settings import PostwireSettings


class TransformerSettings(PostwireSettings):
    """POSTWIRE_GRPC_HOST, POSTWIRE_GRPC_PORT, POSTWIRE_CSS_ENGINE, POSTWIRE_TRANSFORM_WORKERS (+ shared)."""

    grpc_host: str = "127.0.0.1"
    # 0 picks a free port (tests); the bound port is logged and passed to serve()'s ``started``
    grpc_port: NonNegativeInt = 50051
    # engine used when a request leaves css_engine UNSPECIFIED
    css_engine: Literal["css-inline", "premailer"] = "css-inline"
    # worker processes that run the CPU-bound inlining; 0 means one per CPU
    transform_workers: NonNegativeInt = 0
