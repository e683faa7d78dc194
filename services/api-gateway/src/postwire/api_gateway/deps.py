"""The outside world the app talks to, handed to :func:`postwire.api_gateway.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.settings import ApiSettings
from postwire.core.intake import Intake


@dataclass
class Deps:
    """Opened and closed by the caller (see :func:`postwire.api_gateway.service.serve`)."""

    settings: ApiSettings
    nc: Client
    intake: Intake
    sessions: async_sessionmaker[AsyncSession]
