"""Forwarding settings (env prefix POSTWIRE_), read by both stages that forward."""

from __future__ import annotations

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.bounce_forwarding.forwarder import Forwarder, RelayConfig
from postwire.core.settings import PostwireSettings


class ForwardingSettings(PostwireSettings):
    # {"<account id>": "<address>"} as JSON; empty: nobody forwards
    bounce_forward: dict[str, str] = Field(default_factory=dict)
    forward_smtp_host: str = "127.0.0.1"
    forward_smtp_port: int = 25
    forward_smtp_validate_certs: bool = True
    forward_from: str = ""  # From: of forwarded bounces; empty: postmaster@<bounce_domain>
    # the bounce MX's name: its greeting, and the Reporting-MTA of forwarded reports; empty: bounce_domain
    bounce_smtp_hostname: str = ""


def forwarder_from(settings: ForwardingSettings,
                   sessions: async_sessionmaker[AsyncSession]) -> Forwarder | None:
    """The forwarder the settings ask for; None when no account forwards."""
    if not settings.bounce_forward:
        return None
    return Forwarder(settings.bounce_forward, RelayConfig(
        host=settings.forward_smtp_host, port=settings.forward_smtp_port,
        from_address=settings.forward_from or f"postmaster@{settings.bounce_domain}",
        validate_certs=settings.forward_smtp_validate_certs,
        reporting_mta=settings.bounce_smtp_hostname or settings.bounce_domain,
    ), sessions)
