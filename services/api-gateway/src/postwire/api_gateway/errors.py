"""One error shape for every failure, so clients parse a single format.

Every error body is ``{"error": <stable code>, "message": <human text>}``; validation failures (422) add
``"detail": [{"loc": [...], "msg": ..., "type": ...}]`` in FastAPI's usual order, minus ``input`` (it
would echo whole attachments back) and ``ctx``. ``message`` summarises the first few field errors as
``body.to.0: …`` so a log line or a curl user sees what to fix without reading the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from postwire.api_gateway import metrics

log = structlog.get_logger(__name__)

Loc = tuple[str | int, ...]

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "message_too_large",
          415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
          503: "unavailable"}


class ErrorBody(BaseModel):
    """Body of every non-2xx answer."""

    error: str = Field(description="Stable machine-readable code, e.g. `queue_unavailable`.")
    message: str = Field(description="Human-readable explanation.")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. `[\"body\", \"to\", 0]`.")
    msg: str
    type: str = Field(description="Error kind, e.g. `invalid_address`, `header_injection`.")


class ValidationErrorBody(ErrorBody):
    """Body of a 422: ``error`` is ``validation_error`` (or ``idempotency_key_reused``)."""

    detail: list[FieldError] = Field(default_factory=list)


class ApiError(Exception):
    """A failure with a known status and code; raised anywhere, rendered by :func:`install`."""

    def __init__(self, status_code: int, error: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.headers = headers


class InvalidInput(Exception):
    """A 422 found outside pydantic (raw MIME checks); rendered exactly like a validation error."""

    def __init__(self, loc: Loc, msg: str, type_: str) -> None:
        super().__init__(msg)
        self.errors = [FieldError(loc=list(loc), msg=msg, type=type_)]


def error_response(status_code: int, error: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=error, message=message).model_dump(), status_code, headers=headers)


def _field_errors(errors: Sequence[Any]) -> list[FieldError]:
    out = []
    for e in errors:
        msg = str(e.get("msg", "invalid"))
        ctx_error = (e.get("ctx") or {}).get("error")
        if e.get("type") == "json_invalid" and ctx_error:
            msg = f"invalid JSON: {ctx_error}"
        out.append(FieldError(loc=list(e.get("loc", ())), msg=msg, type=str(e.get("type", "invalid"))))
    return out


def validation_response(errors: list[FieldError], error: str = "validation_error") -> JSONResponse:
    metrics.REJECTED.labels("invalid").inc()
    shown = "; ".join(f"{'.'.join(map(str, e.loc)) or 'request'}: {e.msg}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    body = ValidationErrorBody(error=error, message=shown + more, detail=errors)
    return JSONResponse(body.model_dump(), 422)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(_field_errors(exc.errors()))


async def _on_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    return validation_response(exc.errors)


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.error, exc.message, exc.headers)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI could not read a JSON body at all (not UTF-8): a 400 no route documents. Answer it
        # like any other unreadable JSON, and like /v1/send does (found by the schemathesis fuzzer).
        why = "not UTF-8" if isinstance(exc.__cause__, UnicodeDecodeError) else "unreadable body"
        return validation_response([FieldError(loc=["body"], msg=f"invalid JSON: {why}",
                                               type="json_invalid")])
    if exc.status_code == 413:
        metrics.REJECTED.labels("too_large").inc()
    return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), str(exc.detail),
                          dict(exc.headers or {}))


async def _on_unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("api.unhandled_error", error_type=type(exc).__name__)
    return error_response(500, "internal_error", "internal error; nothing was sent")


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the shape above."""
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(InvalidInput, _on_invalid)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given error statuses, with their real body models."""
    text = {400: "Malformed request.", 401: "Missing or invalid API key.",
            404: "No such message in this account.",
            409: "A request with this Idempotency-Key is still in progress; retry shortly.",
            413: "The request body (or the message built from it) is larger than the limit.",
            415: "Unsupported Content-Type.",
            422: "Invalid input; `detail` names each offending field. Also: Idempotency-Key reused "
                 "with a different request (`error`: `idempotency_key_reused`).",
            429: "This account's request rate (`rate_limited`) or send quota (`send_quota_exceeded`) is "
                 "used up: nothing was done or queued; retry after Retry-After seconds.",
            503: "Queue (NATS) or database unavailable: nothing was accepted; retry after Retry-After."}
    return {c: {"model": ValidationErrorBody if c == 422 else ErrorBody, "description": text[c]}
            for c in codes}
