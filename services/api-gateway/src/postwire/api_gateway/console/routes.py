"""The console's pages (docs/console.md): server-rendered HTML, read through the same functions the API's
routes call (postwire.db.events_query, suppressions, routes.load_message), so a page and /v1/... cannot
disagree. Every page needs a session; changes also need the admin role and the form's CSRF token.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Annotated, Final

import structlog
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.archived import archived_copy
from postwire.api_gateway.console import charts
from postwire.api_gateway.console.access import access_router
from postwire.api_gateway.console.bounce_report import summarise
from postwire.api_gateway.console.domains_page import domains_router
from postwire.api_gateway.console.pages import HERE, SECURITY_HEADERS, deps_of, page, preview
from postwire.api_gateway.console.sandbox_inbox import sandbox_router
from postwire.api_gateway.console.sessions import (
    COOKIE,
    LIFETIME,
    Forbidden,
    LoginLimiter,
    NotLoggedIn,
    check_csrf,
    current,
    require_admin,
    set_cookie,
    to_login,
)
from postwire.api_gateway.console.templates_page import templates_router
from postwire.api_gateway.console.webhooks_page import webhooks_router
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError
from postwire.api_gateway.routes import load_message
from postwire.api_gateway.routes_suppressions import add_manual, add_manual_many, remove_manual
from postwire.core import archive
from postwire.core.addresses import AddressError, normalize_address
from postwire.db import console_users, messages_query
from postwire.db import suppressions as suppression_store
from postwire.db.console_users import Session
from postwire.db.domains import list_domains
from postwire.db.events_query import (
    BOUNCE_EXPORT_COLUMNS,
    EventFilter,
    bounce_export,
    bounce_groups,
    daily_counts,
    list_window,
    recent,
)

log = structlog.get_logger(__name__)

METRICS: Final = ("accepted", "delivered", "deferred", "failed", "bounced", "opened", "clicked", "complained")
PERIODS: Final = {"today": 1, "7d": 7, "30d": 30}
PAGE: Final = 50
IMPORT_MAX_BYTES: Final = 1024 * 1024
BOUNCES_SHOWN: Final = 500  # the newest listed on the page (the breakdown counts them all)
BOUNCE_CSV_MAX: Final = 100_000  # rows in one bounce CSV (the API pages through any number)
IMPORT_MAX_ROWS: Final = 10_000


def _deps(request: Request) -> Deps:
    return deps_of(request)


def install(app: FastAPI) -> None:
    """The console's routes, its static files and the answers for a missing session or right."""
    app.state.login_limiter = LoginLimiter(_deps_of_app(app).limits)
    app.include_router(console_router())
    app.include_router(access_router())
    app.include_router(templates_router())
    app.include_router(sandbox_router())
    app.include_router(domains_router())
    app.include_router(webhooks_router())
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, _: NotLoggedIn) -> Response:
        return to_login(request)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return page(request, "error.html", None, status_code=403, message=str(exc))


def _deps_of_app(app: FastAPI) -> Deps:
    deps: Deps = app.state.deps
    return deps


Current = Annotated[Session, Depends(current)]


def console_router() -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        return page(request, "login.html", None)

    @router.post("/login")
    async def login(request: Request, username: Annotated[str, Form(max_length=320)],
                    password: Annotated[str, Form(max_length=1000)]) -> Response:
        limiter: LoginLimiter = request.app.state.login_limiter
        client = request.client.host if request.client else "?"
        if not await limiter.allow(client, username):
            log.warning("console.login_rate_limited", client=client)
            return page(request, "login.html", None, status_code=429,
                        error="Too many attempts. Wait a minute and try again.")
        async with _deps(request).sessions.begin() as s:
            user = await console_users.verify(s, username, password)
            if user is None:
                log.info("console.login_failed", client=client)
                return page(request, "login.html", None, status_code=401,
                            error="Wrong login name or password.", username=username)
            token, _ = await console_users.open_session(s, user, LIFETIME)
        log.info("console.login", user_id=user.id, account_id=user.account_id)
        response = RedirectResponse("/console/", status_code=303)
        set_cookie(request, response, token)
        return response

    @router.api_route("/logout", methods=["GET", "POST"])
    async def logout(request: Request) -> Response:
        token = request.cookies.get(COOKIE, "")
        if token:
            async with _deps(request).sessions.begin() as s:
                await console_users.close_session(s, token)
        return to_login(request)

    @router.get("/")
    async def overview(request: Request, session: Current,
                       period: Annotated[str, Query(max_length=10)] = "7d",
                       start: Annotated[str | None, Query(max_length=10)] = None,
                       end: Annotated[str | None, Query(max_length=10)] = None,
                       tag: Annotated[str | None, Query(max_length=128)] = None,
                       domain: Annotated[str | None, Query(max_length=253)] = None) -> Response:
        lo, hi, period = _period(period, start, end)
        domain = (domain or "").strip().lower()
        async with _deps(request).sessions() as s:
            days = await daily_counts(s, session.user.account_id, lo, hi, tag or None, domain or None)
            # the select's choices: the account's sending domains, and the one asked for (a subdomain
            # typed into the address) so that the form shows the filter the figures are for
            names = [d.name for d in await list_domains(s, session.user.account_id)]
        if domain and domain not in names:
            names.append(domain)
        totals = {m: sum(int(d.get(m, 0)) for d in days) for m in METRICS}
        accepted = totals["accepted"] or 1
        rates = {"delivery": 100 * totals["delivered"] / accepted,
                 "bounce": 100 * (totals["bounced"] + totals["failed"]) / accepted}
        return page(request, "overview.html", session, totals=totals, rates=rates, days=days,
                    chart=charts.volume(days), period=period, start=lo.date().isoformat(),
                    end=(hi - timedelta(days=1)).date().isoformat(), tag=tag or "", domain=domain,
                    domains=names, metrics=METRICS)

    @router.get("/messages")
    async def messages(request: Request, session: Current, q: Annotated[str, Query(max_length=320)] = "",
                       page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1) -> Response:
        async with _deps(request).sessions() as s:
            rows = await messages_query.search(s, session.user.account_id, q, PAGE + 1, (page_no - 1) * PAGE)
        return page(request, "messages.html", session, rows=rows[:PAGE], q=q, page_no=page_no,
                    more=len(rows) > PAGE)

    @router.get("/messages/{message_id}")
    async def message(request: Request, session: Current, message_id: str) -> Response:
        deps = _deps(request)
        detail = await load_message(deps, session.user.account_id, message_id[:40])
        if detail is None:
            return page(request, "error.html", session, status_code=404,
                        message=f"No message {message_id[:40]!r} in this account.")
        f = EventFilter(message_id=detail.id, start=detail.created_at - timedelta(days=1),
                        end=datetime.now(UTC) + timedelta(days=1))
        async with deps.sessions() as s:
            events = await list_window(s, session.user.account_id, f, 1000)
        headers, html = await _as_accepted(deps, session.user.account_id, detail.id)
        return page(request, "message.html", session, m=detail, events=events, headers=headers,
                    html=html is not None)

    @router.get("/messages/{message_id}/html")
    async def message_html(request: Request, session: Current, message_id: str) -> Response:
        """The HTML as accepted, for the message page's frame (its own styles apply there)."""
        deps = _deps(request)
        detail = await load_message(deps, session.user.account_id, message_id[:40])
        html = (await _as_accepted(deps, session.user.account_id, detail.id))[1] if detail else None
        if html is None:
            return page(request, "error.html", session, status_code=404, message="No HTML to show.")
        return preview(html)

    @router.get("/bounces")
    async def bounces(request: Request, session: Current, reason: Annotated[str, Query(max_length=40)] = "",
                      period: Annotated[str, Query(max_length=10)] = "30d") -> Response:
        lo, hi, period = _period(period, None, None)
        wanted = EventFilter(start=lo, end=hi, bounces_only=True, reason=reason or None)
        async with _deps(request).sessions() as s:
            rows = await recent(s, session.user.account_id, wanted, BOUNCES_SHOWN)
            report = summarise(await bounce_groups(s, session.user.account_id, wanted))
        return page(request, "bounces.html", session, rows=rows, reason=reason, period=period, report=report,
                    shown=BOUNCES_SHOWN)

    @router.get("/bounces.csv")
    async def bounces_csv(request: Request, session: Current,
                          reason: Annotated[str, Query(max_length=40)] = "",
                          period: Annotated[str, Query(max_length=10)] = "30d") -> Response:
        lo, hi, _ = _period(period, None, None)
        wanted = EventFilter(start=lo, end=hi, bounces_only=True, reason=reason or None)
        return StreamingResponse(_bounce_csv(_deps(request).sessions, session.user.account_id, wanted),
                                 media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="bounces.csv"',
                                          **SECURITY_HEADERS})

    @router.get("/suppressions")
    async def suppressions(request: Request, session: Current,
                           q: Annotated[str, Query(max_length=320)] = "") -> Response:
        async with _deps(request).sessions() as s:
            rows = await suppression_store.list_page(s, session.user.account_id,
                                                     suppression_store.Filters(prefix=q or None), None, 500)
        return page(request, "suppressions.html", session, rows=rows, q=q)

    @router.post("/suppressions")
    async def suppress(request: Request, session: Current, address: Annotated[str, Form(max_length=320)],
                       csrf: Annotated[str | None, Form(max_length=100)] = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        try:
            normalize_address(address)
        except AddressError as e:
            return await _suppressions_page(request, session, str(e))
        try:
            await add_manual(request, session.user.account_id, address, "manual", None)
        except ApiError as e:
            return await _suppressions_page(request, session, e.message)
        return RedirectResponse("/console/suppressions", status_code=303)

    @router.post("/suppressions/remove")
    async def unsuppress(request: Request, session: Current, address: Annotated[str, Form(max_length=320)],
                         csrf: Annotated[str | None, Form(max_length=100)] = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        await remove_manual(request, session.user.account_id, address)
        return RedirectResponse("/console/suppressions", status_code=303)

    @router.post("/suppressions/import")
    async def import_suppressions(request: Request, session: Current, file: UploadFile,
                                  csrf: Annotated[str | None, Form(max_length=100)] = None) -> Response:
        """A CSV file (the export's format, or any file whose first column holds the addresses; a header
        row is skipped): every valid address suppressed, the invalid ones listed."""
        check_csrf(session, csrf)
        require_admin(session)
        raw = await file.read(IMPORT_MAX_BYTES + 1)
        if len(raw) > IMPORT_MAX_BYTES:
            return await _suppressions_page(request, session, f"the file is over "
                                                  f"{IMPORT_MAX_BYTES // 1024} KB: split it")
        valid, invalid = _addresses_of(raw.decode("utf-8", "replace"))
        if len(valid) > IMPORT_MAX_ROWS:
            return await _suppressions_page(request, session, f"at most {IMPORT_MAX_ROWS} addresses "
                                                  "per file: split it")
        added = await add_manual_many(request, session.user.account_id, valid, "manual") if valid else 0
        note = f"{added} address(es) suppressed"
        if invalid:
            more = " …" if len(invalid) > 10 else ""
            note += f"; not addresses, skipped: {', '.join(invalid[:10])}{more}"
        return await _suppressions_page(request, session, note, status_code=200)

    @router.get("/suppressions.csv")
    async def suppressions_csv(request: Request, session: Current) -> Response:
        rows = suppression_store.iter_all(_deps(request).sessions, session.user.account_id,
                                          suppression_store.Filters())
        return StreamingResponse(_suppression_csv(rows), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="suppressions.csv"',
                                          **SECURITY_HEADERS})

    return router


async def _suppressions_page(request: Request, session: Session, error: str,
                                   status_code: int = 422) -> Response:
    async with _deps(request).sessions() as s:
        rows = await suppression_store.list_page(s, session.user.account_id, suppression_store.Filters(),
                                                 None, 500)
    key = "error" if status_code >= 400 else "notice"
    return page(request, "suppressions.html", session, status_code=status_code, rows=rows, q="",
                **{key: error})


def _addresses_of(text: str) -> tuple[list[str], list[str]]:
    """The first column of each CSV row: (valid addresses, other values); a header row is skipped."""
    valid: list[str] = []
    invalid: list[str] = []
    for i, row in enumerate(csv.reader(io.StringIO(text))):
        value = row[0].strip() if row else ""
        if not value or (i == 0 and "@" not in value):
            continue
        try:
            valid.append(normalize_address(value))
        except AddressError:
            invalid.append(value[:80])
    return list(dict.fromkeys(valid)), invalid


async def _suppression_csv(pages: AsyncIterator[list[suppression_store.SuppressionInfo]],
                           ) -> AsyncIterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["address", "reason", "source", "created_at", "expires_at"])
    async for rows in pages:
        for r in rows:
            writer.writerow([r.address, r.reason, r.source, r.created_at.isoformat(),
                             r.expires_at.isoformat() if r.expires_at else ""])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def _period(period: str, start: str | None, end: str | None) -> tuple[datetime, datetime, str]:
    """[lo, hi) of whole UTC days: today, the last 7 or 30 days, or custom ``start``..``end`` (inclusive)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "custom" and start and end:
        try:
            lo = datetime.fromisoformat(start).replace(tzinfo=UTC)
            hi = datetime.fromisoformat(end).replace(tzinfo=UTC) + timedelta(days=1)
        except ValueError:
            lo, hi = today - timedelta(days=6), today + timedelta(days=1)
        if lo < hi and hi - lo <= timedelta(days=366):
            return lo, hi, "custom"
    days = PERIODS.get(period, 7)
    return today - timedelta(days=days - 1), today + timedelta(days=1), period if period in PERIODS else "7d"


async def _as_accepted(deps: Deps, account_id: str,
                       message_id: str) -> tuple[list[tuple[str, str]], str | None]:
    """The message's header fields and HTML as accepted (the archive), when it is still there."""
    try:
        found = await archive.load(deps.js, message_id)
        if found is None or found.account_id != account_id:
            return [], None
        raw = await archived_copy(deps.bodies, found, message_id)
    except Exception as e:  # the archive is a nicety here: the page shows what the database has
        log.info("console.archive_unavailable", error=str(e) or type(e).__name__)
        return [], None
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("html",))
    html = str(part.get_content()) if part is not None else None
    return [(k, str(v)) for k, v in msg.items()], html


async def _bounce_csv(sessions: async_sessionmaker[AsyncSession], account_id: str,
                      wanted: EventFilter) -> AsyncIterator[bytes]:
    """The bounce CSV, streamed as PostgreSQL hands the rows over (up to BOUNCE_CSV_MAX)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(BOUNCE_EXPORT_COLUMNS)
    async with sessions() as s:
        async for rows in bounce_export(s, account_id, wanted, BOUNCE_CSV_MAX):
            writer.writerows((row[0].isoformat(), *row[1:]) for row in rows)
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    if out.tell():
        yield out.getvalue().encode()
