"""Process lifecycle: SIGTERM/SIGINT set one stop event that every loop in the service watches."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from postwire.core.logging import configure_logging
from postwire.core.settings import PostwireSettings

S = TypeVar("S", bound=PostwireSettings)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run a service's ``main(stop)`` until a signal asks it to stop and it has drained."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await main(stop)

    asyncio.run(runner())


def run_service(service: str, settings: S,
                serve: Callable[[S, asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """The whole of a service's ``__main__``: JSON logs, then ``serve(settings, stop)`` until a signal.

    ``settings`` is built by the caller before the loop starts, so a bad environment fails at boot."""
    configure_logging(service, settings.log_level)
    run(lambda stop: serve(settings, stop))
