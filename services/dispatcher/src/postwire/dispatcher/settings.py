"""Dispatcher settings, from ``POSTWIRE_*`` environment variables (see the service README).

The names the outside checks rely on are fixed: POSTWIRE_TRANSFORMER_ADDR, POSTWIRE_DNS_NAMESERVERS and
POSTWIRE_MX_PORT. Everything else has a default fit for production; tests shrink the timings.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from postwire.core.settings import PostwireSettings


def parse_nameservers(value: str) -> list[tuple[str, int]]:
    """``"127.0.0.1:5353,[::1]:53,10.0.0.2"`` → ``[("127.0.0.1", 5353), ("::1", 53), ("10.0.0.2", 53)]``."""
    servers: list[tuple[str, int]] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            port = int(port_text)
        else:  # a bare IPv4 address or a bare IPv6 address
            host, port = item, 53
        servers.append((host, port))
    return servers


class DispatcherSettings(PostwireSettings):
    """Router + sender settings. The env prefix stays ``POSTWIRE_`` (inherited)."""

    # which halves run in this process: both by default; split them to scale routing and sending apart
    dispatcher_role: Literal["all", "router", "sender"] = "all"
    transformer_addr: str = "127.0.0.1:50051"
    # a Transform call longer than this counts as the transformer being unavailable (the message waits)
    transformer_timeout_s: PositiveFloat = 30.0
    # how long an INBOUND message waits before the router retries an unavailable transformer
    transformer_retry_s: PositiveFloat = 5.0
    # comma-separated host:port; empty means the system resolver (never used when this is set)
    dns_nameservers: str = ""
    dns_timeout_s: PositiveFloat = 5.0
    mx_port: PositiveInt = 25
    ehlo_hostname: str = Field(default_factory=socket.gethostname)
    replica_index: int = Field(default=0, ge=0)
    replica_count: PositiveInt = 1
    # messages being delivered at once by this replica (all owned shards together)
    max_concurrency: PositiveInt = 64
    fetch_batch: PositiveInt = 32
    # ack_wait of the consumers; long transactions send in_progress() well within it
    ack_wait_s: PositiveFloat = 60.0
    # per sender consumer: messages waiting for a retry (nak with delay) count against it, so it must
    # hold a shard's whole deferred queue or the shard stops fetching new mail
    sender_max_ack_pending: PositiveInt = 20_000
    connect_timeout_s: PositiveFloat = 30.0
    command_timeout_s: PositiveFloat = 300.0
    # opportunistic STARTTLS to MX hosts, certificates unverified unless mx_tls_verify
    mx_starttls: bool = True
    mx_tls_verify: bool = False
    retry_base_s: PositiveFloat = 60.0
    retry_max_s: PositiveFloat = 3600.0
    message_lifetime_s: PositiveFloat = 5 * 24 * 3600.0
    max_connections_per_host: PositiveInt = 10
    max_messages_per_connection: PositiveInt = 100
    connection_idle_s: PositiveFloat = 30.0

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        return parse_nameservers(self.dns_nameservers)
