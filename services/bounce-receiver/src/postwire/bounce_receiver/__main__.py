"""``python -m postwire.bounce_receiver``: the bounce MX until SIGTERM/SIGINT."""

from postwire.bounce_receiver.service import serve
from postwire.bounce_receiver.settings import ReceiverSettings
from postwire.core.lifecycle import run_service


def main() -> None:
    run_service("bounce-receiver", ReceiverSettings(), serve)


if __name__ == "__main__":
    main()
