"""Process lifecycle: SIGTERM/SIGINT set one stop event that every loop in the service watches."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import uvloop

from postwire.core.logging import configure_logging
from postwire.core.settings import PostwireSettings

S = TypeVar("S", bound=PostwireSettings)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run a service's ``main(stop)`` until a signal asks it to stop and it has drained.

    On uvloop: its transports and timers are C, where asyncio's are Python, and a relay spends much of
    its time writing small replies and publishes to sockets and waking futures."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await main(stop)

    uvloop.run(runner())


def run_service(service: str, settings: S,
                serve: Callable[[S, asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """The whole of a service's ``__main__``: JSON logs, then ``serve(settings, stop)`` until a signal.

    ``settings`` is built by the caller before the loop starts, so a bad environment fails at boot."""
    configure_logging(service, settings.log_level)
    freeze_imports()
    run(lambda stop: serve(settings, stop))


# young objects allowed before a collection (CPython's default is 700). A message makes thousands of
# short-lived containers (protobuf, dicts, futures) that reference counting frees on its own; at 700 the
# collector ran every fraction of a message to find next to no cycles. 3 % less CPU per message in every
# Python service together (docs/performance.md, sixth round).
GC_YOUNG_THRESHOLD = 10_000


def freeze_imports() -> None:
    """Move every object alive now (modules, classes, protobuf descriptors: some 100,000 in a service)
    out of the garbage collector's reach: they live as long as the process, and a full collection
    scanning them all took 50-60 ms each time under load, in the middle of answering clients. Then
    collect less often (:data:`GC_YOUNG_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def finish_or_cancel(tasks: set[asyncio.Task[Any]], grace_s: float) -> set[asyncio.Task[Any]]:
    """Shutdown's last step for in-flight work: let ``tasks`` finish within ``grace_s``, cancel the rest
    and wait briefly for them to unwind. Returns the tasks that had to be cancelled (for the log)."""
    if not tasks:
        return set()
    _, pending = await asyncio.wait(set(tasks), timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    return pending


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``coro`` as a task for the duration of the block, then cancel it and wait for it to end."""
    task = asyncio.create_task(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
