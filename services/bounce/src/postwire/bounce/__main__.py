"""``python -m postwire.bounce``: the components of POSTWIRE_BOUNCE_ROLE until SIGTERM/SIGINT."""

from postwire.bounce.service import serve
from postwire.bounce.settings import BounceSettings
from postwire.core.lifecycle import run_service


def main() -> None:
    run_service("bounce", BounceSettings(), serve)


if __name__ == "__main__":
    main()
