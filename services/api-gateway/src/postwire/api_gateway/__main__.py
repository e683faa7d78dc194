"""``python -m postwire.api_gateway``: the REST API until SIGTERM/SIGINT, then drain in-flight requests."""

from postwire.api_gateway.service import serve
from postwire.api_gateway.settings import ApiSettings
from postwire.core.lifecycle import run_service


def main() -> None:
    run_service("api-gateway", ApiSettings(), serve)


if __name__ == "__main__":
    main()
