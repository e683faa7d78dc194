"""Dispatcher settings, from ``POSTWIRE_*`` environment variables (see the service README).

The names the outside checks rely on are fixed: POSTWIRE_TRANSFORMER_ADDR, POSTWIRE_DNS_NAMESERVERS and
POSTWIRE_MX_PORT. Everything else has a default fit for production; tests shrink the timings.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from postwire.core.resolver import parse_nameservers
from postwire.core.settings import PostwireSettings
from postwire.dispatcher.relay_host import RelayHost, parse_relay_host


class DispatcherSettings(PostwireSettings):
    """Router + sender settings. The env prefix stays ``POSTWIRE_`` (inherited)."""

    # which halves run in this process: both by default; split them to scale routing and sending apart
    dispatcher_role: Literal["all", "router", "sender"] = "all"
    transformer_addr: str = "127.0.0.1:50051"
    # a Transform call longer than this counts as the transformer being unavailable (the message waits)
    transformer_timeout_s: PositiveFloat = 30.0
    # how long an INBOUND message waits before the router retries an unavailable transformer
    transformer_retry_s: PositiveFloat = 5.0
    # TLS to the transformer (its POSTWIRE_GRPC_TLS_*): the CA of its certificate, and this client's
    # certificate and key when it requires mTLS; the server name overrides the host checked in its
    # certificate. No CA and no certificate: plaintext, as in the local run
    transformer_tls_ca_file: Path | None = None
    transformer_tls_cert_file: Path | None = None
    transformer_tls_key_file: Path | None = None
    transformer_tls_server_name: str = ""
    # comma-separated host:port; empty means the system resolver (never used when this is set)
    dns_nameservers: str = ""
    dns_timeout_s: PositiveFloat = 5.0
    mx_port: PositiveInt = 25
    # host:port that receives every message instead of the recipient domain's MX hosts (Postfix's
    # relayhost; relay_host.py); empty = off. The local run points it at its sandbox
    relay_host: str = ""
    ehlo_hostname: str = Field(default_factory=socket.gethostname)
    replica_index: int = Field(default=0, ge=0)
    replica_count: PositiveInt = 1
    # messages being delivered at once by this replica (all owned shards together)
    # Large enough that a burst to one provider waits for its connections instead of being parked (one
    # provider's share below is a quarter of it); memory is bounded by body_memory_max, not by this
    max_concurrency: PositiveInt = 256
    # the most of max_concurrency one provider's ready queue may hold (waiting or sending), so a few
    # stalled destinations cannot take every sender slot; never less than its allowed connections
    provider_slot_share: float = Field(default=0.25, gt=0, le=1)
    fetch_batch: PositiveInt = 32
    # the weighted choice between the lanes (postwire.dispatcher.lanes): while both wait, slots go
    # transactional:bulk in this ratio; a lane alone gets them all
    transactional_weight: PositiveInt = 8
    bulk_weight: PositiveInt = 1
    # ack_wait of the consumers; long transactions send in_progress() well within it
    ack_wait_s: PositiveFloat = 60.0
    # per fresh sender consumer (outbound.<shard>): fetched, unsettled messages. Deferred mail no longer
    # counts here: it waits in the retry consumer (retry_max_ack_pending)
    sender_max_ack_pending: PositiveInt = 20_000
    connect_timeout_s: PositiveFloat = 30.0
    command_timeout_s: PositiveFloat = 300.0
    # opportunistic STARTTLS to MX hosts, certificates unverified unless mx_tls_verify
    mx_starttls: bool = True
    mx_tls_verify: bool = False
    # retry step = message age clamped to [retry_base_s, retry_max_s], times U(0.75, 1) (see retry.py)
    retry_base_s: PositiveFloat = 300.0
    retry_max_s: PositiveFloat = 3600.0
    # the default delivery window (SMTPeter's 1 day; Postfix's is 5); a message's maxdelivertime overrides it
    message_lifetime_s: PositiveFloat = 24 * 3600.0
    connection_idle_s: PositiveFloat = 30.0
    # --- return path and signing (docs/domains.md); bounce_domain, verp_secret: postwire.core.settings
    # how long an account's DKIM keys (or the fact that it has none) are used before PostgreSQL is asked
    # again: a new or deleted domain takes effect within this time
    dkim_cache_ttl_s: PositiveFloat = 60.0
    dkim_cache_size: PositiveInt = 10_000
    # a key lookup slower than this counts as the database being unavailable
    dkim_lookup_timeout_s: PositiveFloat = 5.0
    # how long a message waits when its account's keys cannot be read (database down, nothing cached)
    dkim_retry_s: PositiveFloat = 10.0
    # --- traffic shaping, adaptive backoff, retry queue (docs/delivery.md)
    # YAML shaping rules; unset = the shipped default (postwire/dispatcher/shaping.yaml in the package)
    shaping_file: Path | None = None
    # per retry consumer (outbound.<shard>.retry): deferred messages waiting for their not_before are
    # unacked there; past this, newer retries wait (later than scheduled, never earlier)
    retry_max_ack_pending: PositiveInt = 100_000
    # messages in flight from the retry consumers, apart from max_concurrency (fresh mail's)
    retry_concurrency: PositiveInt = 32
    # bytes of message bodies read from the object store (those over inline_body_max) that senders hold
    # at once; a message waits for room, one larger than the whole budget goes alone
    body_memory_max: PositiveInt = 64 * 2**20
    # bytes of bodies read from the object store that are kept for the next reader: a message to many
    # recipients (its body stored once, postwire.dispatcher.router.SHARED_INLINE_MAX) is read once, not
    # per recipient; 0 keeps none
    body_cache_max: NonNegativeInt = 32 * 2**20
    # how often the queue-depth gauge is refreshed from consumer info
    queue_sample_s: PositiveFloat = 15.0
    # --- suppressions (docs/suppressions.md): how long the router trusts a "suppressed" answer from the
    # SUPPRESSIONS bucket before asking again (a removal takes effect within this); 0 = no cache
    suppression_cache_ttl_s: float = Field(default=10.0, ge=0)
    # --- bulk lanes paused on complaints (docs/delivery.md): how long the router trusts its list of paused
    # accounts (a pause or resume takes effect within this; 0 = read for every bulk message), how long a
    # held message of a still paused account waits before it is looked at again, and how many held
    # messages are looked at in turn (the rest wait unread)
    bulk_pause_cache_ttl_s: float = Field(default=10.0, ge=0)
    bulk_hold_recheck_s: PositiveFloat = 60.0
    bulk_hold_max_ack_pending: PositiveInt = 10_000

    @field_validator("relay_host")
    @classmethod
    def _relay_host_parses(cls, value: str) -> str:
        parse_relay_host(value)  # a typo stops the dispatcher at boot
        return value

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        return parse_nameservers(self.dns_nameservers)

    @property
    def relay(self) -> RelayHost | None:
        return parse_relay_host(self.relay_host)
