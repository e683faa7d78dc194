"""Settings of the bounce receiver (env prefix POSTWIRE_)."""

from __future__ import annotations

from pydantic import Field

from postwire.bounce_forwarding import ForwardingSettings


class ReceiverSettings(ForwardingSettings):
    """The bounce MX, and forwarding of the bounces and complaints it receives."""

    # the MX of bounce_domain (port 25 in a cluster)
    bounce_smtp_host: str = "127.0.0.1"
    bounce_smtp_port: int = 2526
    bounce_smtp_timeout_s: float = 300.0  # idle time before a client is disconnected
    bounce_max_message_size: int = Field(default=10 * 1024 * 1024, gt=0)  # larger reports get 552
    # a verified return path of a message not in PostgreSQL yet: 451 while younger than this, then 550
    bounce_unknown_grace_s: float = 3600.0
