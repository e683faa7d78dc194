"""The operations endpoint every non-HTTP service runs: /healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadyCheck = Callable[[], Awaitable[bool]]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service's stop event owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ops_app(ready: ReadyCheck) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ok = await ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes)


async def serve_app(app: Any, host: str, port: int, stop: asyncio.Event,
                    started: Callable[[int], None] | None = None) -> None:
    """Serve an ASGI app until ``stop`` is set. ``started`` gets the bound port (port 0 is allowed)."""
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP; without it
    # every small answer on a kept-alive connection waited ~40 ms for the client's delayed ACK
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    if started is not None:
        started(sock.getsockname()[1])
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    await task
