"""Settings of ingest-smtp (environment variables ``POSTWIRE_*``; docs/configuration.md lists them)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from postwire.core.settings import PostwireSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IngestSmtpSettings(PostwireSettings):
    """Everything the submission server reads; built once in ``main()``."""

    smtp_host: str = "127.0.0.1"
    # 0 picks a free port (tests); 587 is the submission port (RFC 6409)
    smtp_port: int = 587
    # implicit TLS submission (RFC 8314, "submissions" on 465); 0 = off. Same certificate as STARTTLS
    smtps_port: int = 0
    # the name in the 220 banner, the EHLO reply and our Received: header
    smtp_hostname: str = Field(default_factory=socket.getfqdn)
    # AUTH over a plain-text connection: only for the local dev run, never in a cluster
    smtp_allow_insecure_auth: bool = False
    # successful logins are remembered this long so repeat logins skip argon2id; 0 disables the cache
    smtp_auth_cache_ttl_s: float = 60.0
    # an account's verified From domains are remembered this long (docs/domains.md): a domain verified,
    # or an account allowed unverified From domains, is honoured within it
    from_policy_ttl_s: NonNegativeFloat = 30.0
    # idle time before the server drops a client with 421 (RFC 5321 4.5.3.2 suggests 5 minutes): waiting
    # for a command, or for the rest of a command line
    smtp_timeout_s: PositiveFloat = 300.0
    # total time from DATA to the final dot; a client still sending after this gets 421 (slowloris)
    smtp_data_timeout_s: PositiveFloat = 600.0
    # 4xx/5xx replies one session may collect before 421 and disconnect (Postfix's smtpd_hard_error_limit);
    # the count starts over after each accepted message; 0 = no limit
    smtp_max_errors: NonNegativeInt = 20
    # wait this long before the 220 greeting; a client that talks first is an early talker and is
    # disconnected with 554 (postscreen's greet wait). 0 = greet at once (early talk is still refused
    # when it arrived before the greeting went out)
    smtp_greet_pause_s: NonNegativeFloat = 0.0
    # per client IP (IPv6: per /64), shared by the replicas (docs/limits.md): open connections, and
    # connections a minute (a bucket of that many, refilled over a minute); 0 = no limit
    smtp_max_connections_per_ip: NonNegativeInt = 20
    smtp_connection_rate_per_ip: NonNegativeInt = 60
    # failed AUTH within the window locks the IP (resp. the username) out for the lockout time; 0 = off.
    # At most a day: the shared counts age out of NATS after two days untouched
    smtp_auth_failures_per_ip: NonNegativeInt = 5
    smtp_auth_failures_per_user: NonNegativeInt = 10
    smtp_auth_failure_window_s: float = Field(default=600.0, gt=0, le=86400)
    smtp_auth_lockout_s: float = Field(default=600.0, gt=0, le=86400)
    # clients the per-IP limits above do not apply to (the trusted networks never have them either); like
    # Postfix's smtpd_client_event_limit_exceptions, whose default $mynetworks covers the host itself
    smtp_limit_exempt_networks: Annotated[list[Network], NoDecode] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
    # a header block over this is refused with 552 (Exchange's limit; Postfix keeps 100 KB of headers)
    smtp_max_header_size: PositiveInt = 256 * 1024
    # PEM files; when unset a self-signed certificate is generated once into <data_dir>/tls/
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # like Postfix's mynetworks: clients from these CIDRs may submit without AUTH ...
    trusted_networks: Annotated[list[Network], NoDecode] = []
    # ... on behalf of this account (id or name, resolved at start)
    trusted_account: str = ""
    max_recipients: PositiveInt = 1000

    @field_validator("trusted_networks", "smtp_limit_exempt_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        """The environment gives one comma-separated string ("10.0.0.0/8, 127.0.0.1/32")."""
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            return [ipaddress.ip_network(part, strict=False) for part in parts if part]
        return value

    @model_validator(mode="after")
    def _trusted_needs_account(self) -> IngestSmtpSettings:
        """Fail at boot, not at the first message, when trusted mail would have no account to bill."""
        if self.trusted_networks and not self.trusted_account:
            raise ValueError("POSTWIRE_TRUSTED_NETWORKS is set but POSTWIRE_TRUSTED_ACCOUNT is empty")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both POSTWIRE_TLS_CERT_FILE and POSTWIRE_TLS_KEY_FILE, or neither")
        return self
