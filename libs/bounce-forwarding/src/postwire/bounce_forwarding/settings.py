"""Forwarding settings (env prefix POSTWIRE_), read by both stages that forward."""

from __future__ import annotations

from nats.js import JetStreamContext
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.bounce_forwarding.forwarder import Forwarder, ReportConfig
from postwire.core.bodies import BodyStore
from postwire.core.intake import Intake
from postwire.core.settings import PostwireSettings


class ForwardingSettings(PostwireSettings):
    # {"<account id>": "<address>"} as JSON; empty: nobody forwards
    bounce_forward: dict[str, str] = Field(default_factory=dict)
    forward_from: str = ""  # From: of forwarded bounces; empty: postmaster@<bounce_domain>
    # the bounce MX's name: its greeting, and the Reporting-MTA of forwarded reports; empty: bounce_domain
    bounce_smtp_hostname: str = ""


def forwarder_from(settings: ForwardingSettings, js: JetStreamContext,
                   sessions: async_sessionmaker[AsyncSession]) -> Forwarder | None:
    """The forwarder the settings ask for, submitting reports to INBOUND; None when no account forwards."""
    if not settings.bounce_forward:
        return None
    config = ReportConfig(from_address=settings.forward_from or f"postmaster@{settings.bounce_domain}",
                          reporting_mta=settings.bounce_smtp_hostname or settings.bounce_domain)
    return Forwarder(settings.bounce_forward, Intake(js, BodyStore(js, settings.inline_body_max)), config,
                     sessions)
