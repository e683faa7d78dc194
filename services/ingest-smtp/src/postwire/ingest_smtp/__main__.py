"""``python -m postwire.ingest_smtp``: the submission server until SIGTERM/SIGINT, then a graceful drain."""

from __future__ import annotations

import asyncio

from postwire.core import lifecycle
from postwire.core.logging import configure_logging
from postwire.ingest_smtp.service import serve
from postwire.ingest_smtp.settings import IngestSmtpSettings


def main() -> None:
    settings = IngestSmtpSettings()  # before the loop starts: its hostname default does a DNS lookup
    configure_logging("ingest-smtp", settings.log_level)

    async def run(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    lifecycle.run(run)


if __name__ == "__main__":
    main()
