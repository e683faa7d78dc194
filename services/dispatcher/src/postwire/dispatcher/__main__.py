"""``python -m postwire.dispatcher``: settings from the environment, JSON logs, run until SIGTERM."""

from __future__ import annotations

import asyncio

from postwire.core import lifecycle
from postwire.core.logging import configure_logging
from postwire.dispatcher.app import serve
from postwire.dispatcher.settings import DispatcherSettings


def main() -> None:
    settings = DispatcherSettings()
    configure_logging("dispatcher", settings.log_level)

    async def run(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    lifecycle.run(run)


if __name__ == "__main__":
    main()
