"""The console's Domains page: each sending domain with the DNS records to publish and whether they are
published right now (a live lookup, the same as GET /v1/domains/{name}/check: domain_check.py), whether
mail From it is accepted, and a Verify button (POST /v1/domains/{name}/verify's)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from postwire.api_gateway.console.pages import deps_of, page
from postwire.api_gateway.console.sessions import check_csrf, current, require_admin
from postwire.api_gateway.domain_check import check
from postwire.api_gateway.routes_domains import resolver, verify_domain
from postwire.db.console_users import Session
from postwire.db.domains import list_domains

Current = Annotated[Session, Depends(current)]
Csrf = Annotated[str | None, Form(max_length=100)]


def domains_router() -> APIRouter:
    router = APIRouter(prefix="/console/domains", include_in_schema=False)

    @router.get("")
    async def domains(request: Request, session: Current) -> Response:
        deps = deps_of(request)
        async with deps.sessions() as s:
            rows = await list_domains(s, session.user.account_id)
        checks = await asyncio.gather(*(check(r, deps.settings, resolver(request)) for r in rows))
        return page(request, "domains.html", session, domains=list(zip(rows, checks, strict=True)))

    @router.post("/verify")
    async def verify(request: Request, session: Current, name: Annotated[str, Form(max_length=253)],
                     csrf: Csrf = None) -> Response:
        check_csrf(session, csrf)
        require_admin(session)
        await verify_domain(request, session.user.account_id, name)  # not found: the page shows no change
        return RedirectResponse("/console/domains", status_code=303)

    return router
