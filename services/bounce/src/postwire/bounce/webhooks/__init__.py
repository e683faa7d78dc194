"""The webhook notifier: fans EVENTS out to per-endpoint JetStream queues and POSTs them, signed, with
retries and a dead-letter list (docs/webhooks.md). Entry point: :func:`run_notifier`."""

from postwire.bounce.webhooks.notifier import run_notifier
from postwire.bounce.webhooks.settings import WebhookSettings

__all__ = ["WebhookSettings", "run_notifier"]
