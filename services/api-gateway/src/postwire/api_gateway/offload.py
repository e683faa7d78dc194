"""A request's CPU work (composing, parsing, validating a message): on the event loop when the request is
small, in a thread when it is large.

A usual message takes a fraction of a millisecond to compose or parse. Handing that to a thread costs
more than doing it: the pool hand-off, and, while the loop is busy with other requests, waiting for the
GIL (up to the interpreter's 5 ms switch interval, twice per hand-off). Under load those waits were
most of the API's accept latency. A large request (attachments, a multi-megabyte MIME body) would hold
every other request up for milliseconds, so it still goes to a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from fastapi import Request

INLINE_MAX_BYTES: Final = 256 * 1024  # request bodies up to this size are worked on in the event loop

P = ParamSpec("P")
T = TypeVar("T")


def request_size(request: Request) -> int | None:
    """The request body's declared size; None when it is not declared (chunked)."""
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def run(size: int | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` for a request of ``size`` bytes: here when it is small, else in a thread."""
    if size is not None and size <= INLINE_MAX_BYTES:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
