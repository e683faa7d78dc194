"""A webhook endpoint for tests: a real HTTP server on loopback that records every POST."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from postwire.core.ops import serve_app


class Receiver:
    """Records webhook POSTs to ``/hook`` with their ``Postwire-Signature`` header."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes, str]] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def endpoint(self, request: Request) -> Response:
        self.posts.append((await request.body(), request.headers.get("postwire-signature", "")))
        return Response(status_code=204)

    def events(self, type_: str, recipient: str) -> list[tuple[dict[str, Any], bytes, str]]:
        """(event JSON, raw body, signature) of each POST of this type for this recipient."""
        found = []
        for body, sig in self.posts:
            event = json.loads(body)["event"]
            if event["type"] == type_ and event["recipient"] == recipient:
                found.append((event, body, sig))
        return found


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    rec, stop, bound = Receiver(), asyncio.Event(), asyncio.Event()

    def started(port: int) -> None:
        rec.port = port
        bound.set()

    app = Starlette(routes=[Route("/hook", rec.endpoint, methods=["POST"])])
    task = asyncio.create_task(serve_app(app, "127.0.0.1", 0, stop, started))
    await bound.wait()
    try:
        yield rec
    finally:
        stop.set()
        await task
