"""The FastAPI application: routes, dependencies, error handlers and request metrics.

:func:`create_app` takes ready dependencies (a connected NATS client, an Intake, a session factory), so
tests and :mod:`postwire.api_gateway.service` build the same app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from sqlalchemy.exc import SQLAlchemyError

from postwire.api_gateway import (
    errors,
    ops,
    request_limits,
    routes,
    routes_account,
    routes_archive,
    routes_datarequest,
    routes_dmarc,
    routes_domains,
    routes_events,
    routes_smtpeter,
    routes_suppressions,
    routes_templates,
    routes_tracking,
    routes_unsubscribe,
    routes_webhooks,
)
from postwire.api_gateway.auth import Authenticator, KeyCache, redact_access_logs
from postwire.api_gateway.console import routes as console
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.idempotency import IdempotencyStore
from postwire.api_gateway.ratelimit import RequestRate, SendQuota
from postwire.api_gateway.smtpeter import SmtpeterResend, SmtpeterSend

DESCRIPTION = """Send email through Postwire and follow what happened to it.

Authenticate with `Authorization: Bearer <api key>` (or `?access_token=<api key>`). A 202 (200 on the
SMTPeter-compatible routes) means the message is durably queued.
Every error body is `{"error": code, "message": text}`; a 422 adds `detail`, a list of
`{"loc", "msg", "type"}` naming each offending field.
"""


def create_app(deps: Deps) -> FastAPI:
    """Build the ASGI app. Nothing here does I/O; connections in ``deps`` must already be open."""
    app = FastAPI(title="Postwire API", version="1", description=DESCRIPTION,
                  openapi_tags=[{"name": "messages", "description": "Send mail and read its status."},
                                {"name": "domains", "description": "Sending domains, DKIM keys and the DNS "
                                                                   "records to publish."},
                                {"name": "smtpeter", "description": "SMTPeter-compatible send, resend "
                                                                     "and events (docs/smtpeter.md)."},
                                {"name": "tracking", "description": "Click redirects and the open pixel "
                                                                     "(no auth; docs/tracking.md)."},
                                {"name": "unsubscribe", "description": "One-click unsubscribe, RFC 8058 "
                                                                        "(no auth; docs/unsubscribe.md)."},
                                {"name": "ops", "description": "Probes for Kubernetes."}])
    app.state.deps = deps
    redact_access_logs()
    app.state.authenticator = Authenticator(
        deps.sessions, KeyCache(deps.settings.api_key_cache_ttl_s, deps.settings.api_key_cache_size))
    app.state.idempotency = IdempotencyStore(deps.sessions, deps.settings.idempotency_lease_s,
                                             deps.settings.idempotency_ttl_s)
    app.state.request_rate = RequestRate(deps.settings.api_rate_per_s, deps.settings.api_burst, deps.limits)
    app.state.send_quota = SendQuota(deps.settings.api_send_quota_per_hour,
                                     deps.settings.api_send_quota_per_day, deps.limits)
    errors.install(app)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    # every /v1 route: NUL-free parameters, and these answers documented (a route's own entries win)
    v1: dict[str, Any] = dict(dependencies=[Depends(request_limits.no_nul_parameters)],
                              responses=errors.responses(413, 422, 429))
    app.include_router(routes.messages_router(deps.settings), **v1)
    app.include_router(routes_domains.domains_router(deps.settings), **v1)
    app.include_router(routes_events.events_router(), **v1)
    app.include_router(routes_smtpeter.smtpeter_router(deps.settings), **v1)
    app.include_router(routes_archive.archive_router(), **v1)
    app.include_router(routes_templates.templates_router(), **v1)
    app.include_router(routes_tracking.tracking_router(deps.settings))
    app.include_router(routes_unsubscribe.unsubscribe_router(deps.settings))
    app.include_router(routes_webhooks.webhooks_router(), **v1)
    app.include_router(routes_suppressions.suppressions_router(), **v1)
    app.include_router(routes_dmarc.dmarc_router(), **v1)
    app.include_router(routes_datarequest.datarequest_router(), **v1)
    app.include_router(routes_account.account_router(), **v1)
    app.include_router(ops.router)
    console.install(app)
    limit_for = routes_dmarc.body_limit(routes.body_limit(deps.settings))  # report uploads: 10 MiB
    app.add_middleware(request_limits.BodyLimit, limit_for=limit_for)
    app.add_middleware(ops.RequestMetrics)
    app.openapi = _with_schemas(app, SmtpeterSend, SmtpeterResend)  # type: ignore[method-assign]
    return app


def _with_schemas(app: FastAPI, *models: type[BaseModel]) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI plus the component schemas of request bodies that routes parse themselves
    (JSON or form), which their ``openapi_extra`` refers to."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        _, defs = models_json_schema([(m, "validation") for m in models],
                                     ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        return schema

    return openapi


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    sqlstate = _sqlstate(exc)
    if sqlstate is not None and sqlstate.startswith("22"):
        # a "data exception" (a value PostgreSQL cannot store or compare: out of range, NUL, bad
        # encoding) is the request's fault and retrying cannot help, so not a 503. The validation in
        # front of the database should have caught it: logged as an error to be fixed there.
        errors.log.error("api.database_rejected_value", sqlstate=sqlstate, error=str(exc))
        return errors.validation_response([errors.FieldError(
            loc=["request"], msg="a value in the request is out of range or holds characters that cannot be "
            "stored", type="invalid_value")])
    errors.log.warning("api.database_unavailable", error=str(exc) or type(exc).__name__)
    return errors.error_response(503, "database_unavailable", "the database is unavailable; nothing was "
                                 "sent, retry later", {"Retry-After": "5"})


def _sqlstate(exc: Exception) -> str | None:
    """The SQLSTATE of a database error (asyncpg's, behind SQLAlchemy's wrapper), if it has one."""
    orig = getattr(exc, "orig", None)
    for source in (orig, getattr(orig, "__cause__", None)):
        state = getattr(source, "sqlstate", None) or getattr(source, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


__all__ = ["Deps", "create_app"]
