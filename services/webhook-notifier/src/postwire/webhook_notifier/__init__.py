"""The webhook notifier: fans EVENTS out to per-endpoint JetStream queues and POSTs them, signed, with
retries and a dead-letter list (docs/webhooks.md). Entry point: :func:`run_notifier`."""

from postwire.webhook_notifier.notifier import run_notifier
from postwire.webhook_notifier.settings import WebhookSettings

__all__ = ["WebhookSettings", "run_notifier"]
