"""Request limits: oversize bodies (413) and parameters PostgreSQL cannot hold (422).

Refuse oversize request bodies before reading them, with the same JSON error as everything else.

(FastAPI's own ``max_body_size`` answers a plain-text 413 from inside the router, past our handlers.)
A declared Content-Length over the limit is refused at once; a chunked body is counted as it arrives
and refused when it crosses the limit, so a client can never make the gateway buffer more than that.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postwire.api_gateway import errors, metrics
from postwire.api_gateway.errors import InvalidInput

LimitFor = Callable[[str], int]


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than the limit of {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_for: LimitFor) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            metrics.REJECTED.labels("too_large").inc()
            exc = too_large(limit)
            await errors.error_response(413, "message_too_large", str(exc.detail))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI re-raises an HTTPException met reading the body
                    raise too_large(limit)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def no_nul_parameters(request: Request) -> None:
    """Router dependency: refuse a NUL character in a path or query parameter with a 422.

    PostgreSQL text cannot hold NUL, so such a value used to reach the database and come back as a
    ``503 database_unavailable`` (found by the schemathesis fuzzer): a lie that invites retries. No
    address, id, tag, cursor or domain contains one, so the request is simply invalid."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInput(("path", name), "NUL characters are not allowed", "nul_character")
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise InvalidInput(("query", name.replace("\x00", "")), "NUL characters are not allowed",
                               "nul_character")
