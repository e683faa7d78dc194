"""``python -m postwire.transformer``: run the transformer until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import asyncio

from postwire.core import lifecycle
from postwire.core.logging import configure_logging
from postwire.transformer.server import serve
from postwire.transformer.settings import TransformerSettings


def main() -> None:
    settings = TransformerSettings()
    configure_logging("transformer", settings.log_level)

    async def run(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    lifecycle.run(run)


if __name__ == "__main__":
    main()
