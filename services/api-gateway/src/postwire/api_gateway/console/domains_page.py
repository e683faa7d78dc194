"""The console's Domains page: each sending domain with the DNS records to publish and whether they are
published right now (a live lookup, the same as GET /v1/domains/{name}/check: domain_check.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from postwire.api_gateway.console.pages import deps_of, page
from postwire.api_gateway.console.sessions import current
from postwire.api_gateway.domain_check import check
from postwire.api_gateway.routes_domains import resolver
from postwire.db.console_users import Session
from postwire.db.domains import list_domains

Current = Annotated[Session, Depends(current)]


def domains_router() -> APIRouter:
    router = APIRouter(prefix="/console/domains", include_in_schema=False)

    @router.get("")
    async def domains(request: Request, session: Current) -> Response:
        deps = deps_of(request)
        async with deps.sessions() as s:
            rows = await list_domains(s, session.user.account_id)
        checks = await asyncio.gather(*(check(r, deps.settings, resolver(request)) for r in rows))
        return page(request, "domains.html", session, domains=list(zip(rows, checks, strict=True)))

    return router
