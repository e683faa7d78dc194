"""Settings of the bounce service (env prefix POSTWIRE_)."""

from __future__ import annotations

from postwire.core.settings import PostwireSettings


class BounceSettings(PostwireSettings):
    recorder_batch: int = 256  # events fetched and committed in one transaction
    recorder_retry_s: float = 2.0  # wait before a batch is retried after a database error
