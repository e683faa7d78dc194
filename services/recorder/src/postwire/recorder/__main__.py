"""``python -m postwire.recorder``: the event recorder until SIGTERM/SIGINT."""

from postwire.core.lifecycle import run_service
from postwire.recorder.service import serve
from postwire.recorder.settings import RecorderSettings


def main() -> None:
    run_service("recorder", RecorderSettings(), serve)


if __name__ == "__main__":
    main()
