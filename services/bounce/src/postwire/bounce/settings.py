"""Settings of the bounce service (env prefix POSTWIRE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postwire.bounce.recorder import SuppressionSettings
from postwire.bounce.webhooks.settings import WebhookSettings

# all: every component in one process (the local run); the chart may run one role per Deployment
Role = Literal["all", "recorder", "receiver", "notifier"]


class BounceSettings(WebhookSettings, SuppressionSettings):
    """Every setting of the bounce service's components: recorder (with the soft-bounce policy of
    SuppressionSettings), receiver, forwarding, and the webhook notifier (WebhookSettings)."""

    recorder_batch: int = 256  # events fetched and committed in one transaction
    recorder_retry_s: float = 2.0  # wait before a batch is retried after a database error
    queue_sample_s: float = 15.0  # how often every consumer's queue depth is sampled for metrics
    # which components this process runs (POSTWIRE_BOUNCE_ROLE)
    bounce_role: Role = "all"
    # the bounce receiver: the MX of bounce_domain (port 25 in a cluster)
    bounce_smtp_host: str = "127.0.0.1"
    bounce_smtp_port: int = 2526
    bounce_smtp_hostname: str = ""  # the name in the greeting; empty: bounce_domain
    bounce_smtp_timeout_s: float = 300.0  # idle time before a client is disconnected
    bounce_max_message_size: int = Field(default=10 * 1024 * 1024, gt=0)  # larger reports get 552
    # a verified return path of a message not in PostgreSQL yet: 451 while younger than this, then 550
    bounce_unknown_grace_s: float = 3600.0
    # forwarding: {"<account id>": "<address>"} as JSON; empty: nobody forwards
    bounce_forward: dict[str, str] = Field(default_factory=dict)
    forward_smtp_host: str = "127.0.0.1"
    forward_smtp_port: int = 25
    forward_smtp_validate_certs: bool = True
    forward_from: str = ""  # From: of forwarded bounces; empty: postmaster@<bounce_domain>
