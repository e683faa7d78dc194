"""Settings of ingest-smtp (environment variables ``POSTWIRE_*``; docs/configuration.md lists them)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PositiveInt, field_validator, model_validator
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
    # idle time before the server drops a client (RFC 5321 4.5.3.2 suggests 5 minutes)
    smtp_timeout_s: float = 300.0
    # PEM files; when unset a self-signed certificate is generated once into <data_dir>/tls/
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # like Postfix's mynetworks: clients from these CIDRs may submit without AUTH ...
    trusted_networks: Annotated[list[Network], NoDecode] = []
    # ... on behalf of this account (id or name, resolved at start)
    trusted_account: str = ""
    max_recipients: PositiveInt = 1000

    @field_validator("trusted_networks", mode="before")
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
