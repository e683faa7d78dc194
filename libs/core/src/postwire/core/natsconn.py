"""Connecting to NATS: retry until reachable, reconnect forever, log state changes."""

from __future__ import annotations

import asyncio

import nats
import structlog
from nats.aio.client import Client

log = structlog.get_logger(__name__)


def server_urls(url: str) -> list[str]:
    """``POSTWIRE_NATS_URL`` may name several servers of one cluster, comma-separated
    (``nats://a:4222,nats://b:4222``): the client picks one and fails over to the others (and to the
    servers the cluster announces). Blanks around commas and empty items are ignored."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise ValueError("POSTWIRE_NATS_URL names no server")
    return servers


async def connect(url: str, name: str, *, stop: asyncio.Event | None = None) -> Client:
    """Connect, retrying the first connection too: a service may start before NATS does.

    ``url`` is one server URL or a comma-separated list of the servers of a cluster (see server_urls).
    """
    servers = server_urls(url)

    async def on_disconnect() -> None:
        log.warning("nats.disconnected")

    async def on_reconnect() -> None:
        log.info("nats.reconnected")

    async def on_error(e: Exception) -> None:
        log.warning("nats.error", error=str(e))

    delay = 0.2
    while True:
        try:
            return await nats.connect(
                servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                connect_timeout=2, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
                error_cb=on_error,
                # no buffering while reconnecting: a publish must fail now (→ 451/503, nak) rather
                # than be sent later, after its caller already answered "not accepted"; a settle fails
                # too and is left to redelivery (postwire.core.settle). A reconnect takes milliseconds,
                # a buffer would save next to nothing: measured in docs/nats.md#failover
                pending_size=0,
            )
        except (TimeoutError, OSError, nats.errors.NoServersError) as e:
            if stop is not None and stop.is_set():
                raise
            log.warning("nats.connect_failed", error=str(e), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
