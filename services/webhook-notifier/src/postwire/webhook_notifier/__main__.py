"""``python -m postwire.webhook_notifier``: the webhook notifier until SIGTERM/SIGINT."""

from postwire.core.lifecycle import run_service
from postwire.webhook_notifier.service import serve
from postwire.webhook_notifier.settings import WebhookSettings


def main() -> None:
    run_service("webhook-notifier", WebhookSettings(), serve)


if __name__ == "__main__":
    main()
