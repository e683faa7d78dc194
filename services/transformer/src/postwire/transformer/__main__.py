"""``python -m postwire.transformer``: the gRPC transformer until SIGTERM/SIGINT, then drain."""

from postwire.core.lifecycle import run_service
from postwire.transformer.service import serve
from postwire.transformer.settings import TransformerSettings


def main() -> None:
    run_service("transformer", TransformerSettings(), serve)


if __name__ == "__main__":
    main()
