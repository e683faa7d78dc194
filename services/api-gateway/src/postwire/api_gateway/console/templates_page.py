"""The console's Templates page: the account's stored templates, editing one with a preview rendered
from sample data (docs/templates.md, docs/console.md).

The same checks and rendering as the API's template routes (postwire.api_gateway.templates: every part
compiled at save, a syntax error named with its line; rendering within the language's limits). The
preview is a form post (no script needed): the page comes back with the rendered subject and text and
the HTML in a sandboxed frame. Saving makes a new version, as PUT /v1/templates/{ref} does.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from postwire.api_gateway import templates
from postwire.api_gateway.console.pages import deps_of, page
from postwire.api_gateway.console.sessions import check_csrf, current, require_admin
from postwire.api_gateway.errors import ApiError, InvalidInput
from postwire.db import templates as store
from postwire.db.console_users import Session

Current = Annotated[Session, Depends(current)]
Text = Annotated[str, Form(max_length=templates.MAX_TEMPLATE_BYTES)]
SAMPLE = '{"name": "Ann", "recipient": "ann@example.org"}'


def _content(name: str, subject: str, from_: str, replyto: str, html: str, text: str) -> dict[str, Any]:
    """The form's fields as a template's content (an empty field is no part)."""
    model = templates.TemplateIn.model_validate({"name": name or None, "subject": subject or None,
                                                 "from": from_ or None, "replyto": replyto or None,
                                                 "html": html or None, "text": text or None})
    return model.content()


def _problem(e: Exception) -> str:
    if isinstance(e, InvalidInput):
        return "; ".join(err.msg for err in e.errors)
    if isinstance(e, ValidationError):
        return "; ".join(str(err["msg"]) for err in e.errors())
    if isinstance(e, ApiError):
        return e.message
    return str(e)


def templates_router() -> APIRouter:
    router = APIRouter(prefix="/console/templates", include_in_schema=False)

    @router.get("")
    async def listing(request: Request, session: Current) -> Response:
        async with deps_of(request).sessions() as s:
            rows = await store.listing(s, session.user.account_id, 0, 1000)
        return page(request, "templates.html", session, rows=rows)

    @router.get("/{ref}")
    async def edit(request: Request, session: Current, ref: str) -> Response:
        form: dict[str, Any] = {"name": "", "subject": "", "from": "", "replyto": "", "html": "", "text": "",
                                "data": SAMPLE}
        saved = None
        if ref != "new":
            async with deps_of(request).sessions() as s:
                saved = await store.get(s, session.user.account_id, ref[:100])
            if saved is None:
                return page(request, "error.html", session, status_code=404,
                            message=f"No template {ref[:100]!r} in this account.")
            form |= {k: saved.content.get(k) or "" for k in ("subject", "from", "replyto", "html", "text")}
            form["name"] = saved.name
        return page(request, "template.html", session, ref=ref, form=form, saved=saved)

    @router.post("/{ref}")
    async def save_or_preview(request: Request, session: Current, ref: str, action: Annotated[str, Form()],
                              name: Text = "", subject: Text = "",
                              from_: Annotated[str, Form(alias="from")] = "",
                              replyto: Text = "", html: Text = "", text: Text = "",
                              data: Annotated[str, Form(max_length=100_000)] = SAMPLE,
                              csrf: Annotated[str | None, Form(max_length=100)] = None) -> Response:
        check_csrf(session, csrf)
        form = {"name": name, "subject": subject, "from": from_, "replyto": replyto, "html": html,
                "text": text, "data": data}
        try:
            content = _content(name, subject, from_, replyto, html, text)
            templates.check(content)
        except (InvalidInput, ValidationError, ApiError) as e:
            return page(request, "template.html", session, status_code=422, ref=ref, form=form,
                        error=_problem(e))
        if action == "preview":
            try:
                sample = json.loads(data or "{}")
                if not isinstance(sample, dict):
                    raise ValueError("the sample data must be a JSON object")
                rendered = templates.render(content, sample)
            except (ValueError, InvalidInput) as e:
                return page(request, "template.html", session, status_code=422, ref=ref, form=form,
                            error=_problem(e))
            return page(request, "template.html", session, ref=ref, form=form, preview=rendered)
        require_admin(session)
        aid = session.user.account_id
        try:
            async with deps_of(request).sessions.begin() as s:
                if ref == "new":
                    saved = await store.create(s, aid, name, content)
                else:
                    found = await store.save_version(s, aid, ref[:100], content, name=name or None)
                    if found is None:
                        return page(request, "error.html", session, status_code=404,
                                    message=f"No template {ref[:100]!r} in this account.")
                    saved = found
        except store.NameTaken:
            return page(request, "template.html", session, status_code=409, ref=ref, form=form,
                        error=f"another template is called {name!r}")
        return RedirectResponse(f"/console/templates/{saved.id}", status_code=303)

    return router
