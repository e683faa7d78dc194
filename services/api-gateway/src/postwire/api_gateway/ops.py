"""/healthz, /readyz and /metrics on the API port, plus the middleware that counts requests."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postwire.api_gateway import metrics
from postwire.api_gateway.schemas import ReadyStatus

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: NATS connected and PostgreSQL reachable",
            response_model=ReadyStatus, responses={503: {"model": ReadyStatus, "description": "Not ready."}})
async def readyz(request: Request) -> JSONResponse:
    deps = request.app.state.deps
    database = await _database_ok(request)
    nats = bool(deps.nc.is_connected)
    status = ReadyStatus(ready=nats and database, nats=nats, database=database)
    return JSONResponse(status.model_dump(), 200 if status.ready else 503)


async def _database_ok(request: Request) -> bool:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2), request.app.state.deps.sessions() as s:
            await s.execute(text("SELECT 1"))
            return True
    return False


@router.get("/metrics", include_in_schema=False)
async def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Pure ASGI (no BaseHTTPMiddleware): labels by route template, times until the response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                metrics.REQUEST_SECONDS.labels(_route(scope), scope["method"]).observe(
                    time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.REQUESTS.labels(_route(scope), scope["method"], str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
