"""``python -m postwire.ingest_smtp``: the submission server until SIGTERM/SIGINT, then drain."""

from postwire.core.lifecycle import run_service
from postwire.ingest_smtp.service import serve
from postwire.ingest_smtp.settings import IngestSmtpSettings


def main() -> None:
    run_service("ingest-smtp", IngestSmtpSettings(), serve)


if __name__ == "__main__":
    main()
