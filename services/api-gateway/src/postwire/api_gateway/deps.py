"""The outside world the app talks to, handed to :func:`postwire.api_gateway.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.settings import ApiSettings
from postwire.core.bodies import BodyStore
from postwire.core.intake import Intake
from postwire.core.jetstream import jetstream
from postwire.core.sharedlimits import LimitStore
from postwire.db.sender_domains import FromPolicies


@dataclass
class Deps:
    """Opened and closed by the caller (see :func:`postwire.api_gateway.service.serve`)."""

    settings: ApiSettings
    nc: Client
    intake: Intake
    sessions: async_sessionmaker[AsyncSession]
    # the shared rate limits and quotas (None: this process's own, as in tests of the bare app)
    limits: LimitStore | None = None
    # derived from ``nc``: the JetStream context (archive, buckets) and the body store (resend)
    js: JetStreamContext = field(init=False)
    bodies: BodyStore = field(init=False)
    # each account's verified From domains, cached (postwire.db.sender_domains)
    from_policies: FromPolicies = field(init=False)

    def __post_init__(self) -> None:
        self.js = jetstream(self.nc)
        self.bodies = BodyStore(self.js, self.settings.inline_body_max)
        self.from_policies = FromPolicies(self.sessions, self.settings.from_policy_ttl_s)
