"""api-gateway settings, read from ``POSTWIRE_*`` environment variables (see the service README)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from postwire.core.settings import PostwireSettings


class ApiSettings(PostwireSettings):
    """Everything the gateway reads; shared names (nats_url, database_url, …) come from the base."""

    http_host: str = "127.0.0.1"
    # the API port; 0 picks a free one (tests)
    http_port: int = 8080
    # right-hand side of the Message-ID header of messages built from JSON
    message_id_domain: str = "postwire.local"
    # how long an API key lookup is trusted before PostgreSQL is asked again (also: revocation delay)
    api_key_cache_ttl_s: float = Field(default=60.0, ge=0)
    api_key_cache_size: int = Field(default=10_000, ge=1)
    # an account's verified From domains are remembered this long (docs/domains.md): a domain verified,
    # or an account allowed unverified From domains, is honoured within it
    from_policy_ttl_s: float = Field(default=30.0, ge=0)
    # how long JetStream may take to acknowledge a publish before the API answers 503
    publish_timeout_s: float = Field(default=5.0, gt=0)
    # a pending Idempotency-Key reservation older than this is presumed abandoned (crash) and taken over;
    # keep it below the INBOUND duplicate window (120 s) so the takeover's re-publish is deduplicated
    idempotency_lease_s: float = Field(default=60.0, gt=0)
    # an Idempotency-Key is honoured this long after its request was first made; after that the key is
    # free for a new request (and the stored answer is deleted). Must outlast the lease
    idempotency_ttl_s: float = Field(default=86400.0, gt=0)
    # where GET /v1/domains/{name}/check and the console's Domains page look records up: comma-separated
    # host:port (the dispatcher's setting, same name); empty means the system resolver
    dns_nameservers: str = ""
    dns_timeout_s: float = Field(default=3.0, gt=0)
    # the local run's sandbox folder (postwire.core.sandbox_store): the console shows its inbox; unset
    # (as in the chart) the inbox page says there is no sandbox
    sandbox_dir: Path | None = None
    max_recipients: int = Field(default=10_000, ge=1)
    # request body limit of the routes that carry no message (domains, webhooks, suppressions, resend,
    # replay, and any body sent to a GET); the sending routes are held to POSTWIRE_MAX_MESSAGE_SIZE
    api_body_max: int = Field(default=256 * 1024, ge=1024)
    # per-account request rate of /v1 (token bucket shared by the replicas, ratelimit.py); 0 = no limit
    api_rate_per_s: float = Field(default=0.0, ge=0)
    api_burst: int = Field(default=50, ge=1)
    # per-account send quota, recipients accepted through the API per hour / per day (shared by the
    # replicas, sliding; ratelimit.py); 0 = unlimited
    api_send_quota_per_hour: int = Field(default=0, ge=0)
    api_send_quota_per_day: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _ttl_outlasts_lease(self) -> ApiSettings:
        """A key expiring while its request may still be running could send the message twice."""
        if self.idempotency_ttl_s <= self.idempotency_lease_s:
            raise ValueError("POSTWIRE_IDEMPOTENCY_TTL_S must be longer than POSTWIRE_IDEMPOTENCY_LEASE_S")
        return self
