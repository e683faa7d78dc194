"""``python -m postwire.dispatcher``: router and senders until SIGTERM/SIGINT, then drain."""

from postwire.core.lifecycle import run_service
from postwire.dispatcher.service import serve
from postwire.dispatcher.settings import DispatcherSettings


def main() -> None:
    run_service("dispatcher", DispatcherSettings(), serve)


if __name__ == "__main__":
    main()
