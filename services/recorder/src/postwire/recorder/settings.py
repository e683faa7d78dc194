"""Settings of the event recorder (env prefix POSTWIRE_)."""

from __future__ import annotations

from postwire.bounce_forwarding import ForwardingSettings
from postwire.recorder.recorder import SuppressionSettings


class RecorderSettings(SuppressionSettings, ForwardingSettings):
    """The recorder, its soft-bounce policy (SuppressionSettings) and forwarding of what it records."""

    recorder_batch: int = 256  # events fetched and committed in one transaction
    recorder_retry_s: float = 2.0  # wait before a batch is retried after a database error
    queue_sample_s: float = 15.0  # how often every consumer's queue depth is sampled for metrics
    # how often the accounts' 24-hour bounce and complaint rates are computed (gauges, automatic bulk pause)
    rates_sample_s: float = 60.0
    # fewer deliveries than this in 24 hours never pause an account's bulk lane
    rates_min_delivered: int = 100
