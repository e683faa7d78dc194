"""Stored templates over HTTP: SMTPeter's `/v1/template…` calls and Postwire's own `/v1/templates`,
both on :mod:`postwire.api_gateway.templates` and :mod:`postwire.db.templates` (docs/templates.md).

SMTPeter                                        Postwire
POST   /v1/template/{format}        → 201 {id}   POST   /v1/templates                  → 201 template
PUT    /v1/template/{format}        → 201 {id}   PUT    /v1/templates/{ref}            → 200 template
DELETE /v1/template/{ref}           → 204        DELETE /v1/templates/{ref}            → 204
GET    /v1/templates/{start}/{length}            GET    /v1/templates?offset=&limit=
GET    /v1/template/{ref}[/{format}]             GET    /v1/templates/{ref}, …/versions[/{n}]
       (query parameters: personalisation data)  POST   /v1/templates/{ref}/preview {data, version}

``ref`` is the template's id or its name. Another account's template is a 404 like a missing one.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from postwire.api_gateway import templates
from postwire.api_gateway.accept import deps_of
from postwire.api_gateway.auth import Account
from postwire.api_gateway.errors import ApiError, InvalidInput, responses
from postwire.api_gateway.templates import TemplateIn
from postwire.core.ids import new_message_id
from postwire.db import templates as store

Ref = Annotated[str, Path(description="The template's id or its name.", max_length=100)]
Format = Literal["json", "html", "webversion", "text", "mime", "embedded"]
SAFE = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
MAX_LIST = 1000
SMTPETER_TAGS: list[str | Enum] = ["smtpeter"]
OWN_TAGS: list[str | Enum] = ["templates"]


class TemplateParts(BaseModel):
    subject: str | None = None
    from_: str | None = Field(default=None, alias="from", serialization_alias="from")
    replyto: str | None = None
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class TemplateOut(TemplateParts):
    id: int
    name: str
    version: int
    created_at: datetime
    updated_at: datetime


class TemplateRef(BaseModel):
    id: int
    name: str


class TemplateList(BaseModel):
    templates: list[TemplateRef]


class VersionOut(BaseModel):
    version: int
    created_at: datetime


class Preview(BaseModel):
    data: dict[str, Any] = Field(default_factory=dict, description="The personalisation variables.")
    version: int | None = Field(default=None, description="Default: the current version.")


class Rendered(TemplateParts):
    """Every part of a template rendered with data."""


def _out(saved: store.Saved) -> dict[str, Any]:
    return {"id": saved.id, "name": saved.name, "version": saved.version, **saved.content,
            "created_at": saved.created_at, "updated_at": saved.updated_at}


def _missing(ref: str | int) -> ApiError:
    return ApiError(404, "not_found", f"no template {str(ref)[:100]!r} in this account")


def _taken(name: str) -> ApiError:
    return ApiError(409, "name_taken", f"another template of this account is named {name!r}")


def _named(payload: TemplateIn) -> str:
    if payload.name is None:
        raise InvalidInput(("body", "name"), "a new template needs a name", "missing")
    return payload.name


async def _create(request: Request, account_id: str, payload: TemplateIn) -> store.Saved:
    content = payload.content()
    templates.check(content)
    async with deps_of(request).sessions.begin() as s:
        try:
            return await store.create(s, account_id, _named(payload), content)
        except store.NameTaken:
            raise _taken(_named(payload)) from None


async def _save(request: Request, account_id: str, ref: str | int, payload: TemplateIn) -> store.Saved:
    content = payload.content()
    templates.check(content)
    async with deps_of(request).sessions.begin() as s:
        try:
            saved = await store.save_version(s, account_id, ref, content, name=payload.name)
        except store.NameTaken:
            raise _taken(payload.name or "") from None
    if saved is None:
        raise _missing(ref)
    return saved


async def _get(request: Request, account_id: str, ref: str, version: int | None = None) -> store.Saved:
    async with deps_of(request).sessions() as s:
        saved = await store.get(s, account_id, ref, version)
    if saved is None:
        raise _missing(ref if version is None else f"{ref} version {version}")
    return saved


def _data(request: Request) -> dict[str, str]:
    """SMTPeter's preview: the query parameters are the personalisation data (not the key)."""
    return {k: v for k, v in request.query_params.items() if k != "access_token"}


def _formatted(saved: store.Saved, fmt: Format, data: dict[str, Any], domain: str) -> Response:
    if fmt == "json":
        return JSONResponse(TemplateOut.model_validate(_out(saved)).model_dump(mode="json", by_alias=True))
    rendered = templates.render(saved.content, data, loc=("query",))
    if fmt in ("html", "webversion"):
        return Response((rendered["html"] or "").encode(), media_type="text/html; charset=utf-8",
                        headers=SAFE)
    if fmt == "text":
        return Response((rendered["text"] or "").encode(), media_type="text/plain; charset=utf-8",
                        headers=SAFE)
    raw = templates.mime(rendered, new_message_id(), domain)
    return Response(raw, media_type="text/plain; charset=utf-8", headers=SAFE)


def templates_router() -> APIRouter:
    router = APIRouter(prefix="/v1")

    # ------------------------------------------------------------------------------------ SMTPeter

    @router.post("/template/{format}", status_code=201, responses=responses(401, 409, 413, 422, 503),
                 summary="Create a template (SMTPeter-compatible)", tags=SMTPETER_TAGS,
                 description="The template JSON; `format` only shapes the Location URL. 201 with "
                             "`Location: /v1/template/{id}/{format}` and `{\"id\": N}`.")
    async def smtpeter_create(request: Request, account_id: Account, format: Format,
                              payload: Annotated[TemplateIn, Body()]) -> JSONResponse:
        saved = await _create(request, account_id, payload)
        return JSONResponse({"id": saved.id}, 201, headers={"Location": f"/v1/template/{saved.id}/{format}"})

    @router.put("/template/{format}", status_code=201, responses=responses(401, 404, 409, 413, 422, 503),
                summary="Save a new version of a template (SMTPeter-compatible)", tags=SMTPETER_TAGS,
                description="The template JSON with its `id` (or, without one, its `name`).")
    async def smtpeter_update(request: Request, account_id: Account, format: Format,
                              payload: Annotated[TemplateIn, Body()]) -> JSONResponse:
        ref: str | int = payload.id if payload.id is not None else _named(payload)
        saved = await _save(request, account_id, ref, payload)
        return JSONResponse({"id": saved.id}, 201, headers={"Location": f"/v1/template/{saved.id}/{format}"})

    @router.delete("/template/{ref}", status_code=204, responses=responses(401, 404, 503), tags=SMTPETER_TAGS,
                   summary="Delete a template (SMTPeter-compatible)")
    async def smtpeter_delete(request: Request, account_id: Account, ref: Ref) -> Response:
        return await delete(request, account_id, ref)

    @router.get("/template/{ref}", responses=responses(401, 404, 422, 503), tags=SMTPETER_TAGS,
                summary="A template as JSON (SMTPeter-compatible)", response_model=TemplateOut)
    async def smtpeter_get(request: Request, account_id: Account, ref: Ref) -> Response:
        return _formatted(await _get(request, account_id, ref), "json", {}, _domain(request))

    @router.get("/template/{ref}/{format}", responses=responses(401, 404, 422, 503), tags=SMTPETER_TAGS,
                summary="A template, rendered (SMTPeter-compatible)",
                description="`json`: the template; `html`/`webversion`, `text`: that part rendered; `mime`/"
                            "`embedded`: the message it makes. Query parameters are the personalisation "
                            "data (a preview).")
    async def smtpeter_get_format(request: Request, account_id: Account, ref: Ref,
                                  format: Format) -> Response:
        return _formatted(await _get(request, account_id, ref), format, _data(request), _domain(request))

    # ------------------------------------------------------------------------------------- Postwire

    @router.post("/templates", status_code=201, response_model=TemplateOut, response_model_by_alias=True,
                 responses=responses(401, 409, 413, 422, 503), summary="Create a template", tags=OWN_TAGS)
    async def create(request: Request, account_id: Account,
                     payload: Annotated[TemplateIn, Body()]) -> JSONResponse:
        saved = await _create(request, account_id, payload)
        body = TemplateOut.model_validate(_out(saved)).model_dump(mode="json", by_alias=True)
        return JSONResponse(body, 201, headers={"Location": f"/v1/templates/{saved.id}"})

    @router.get("/templates", response_model=TemplateList, responses=responses(401, 503), tags=OWN_TAGS,
                summary="List templates, oldest first")
    async def listing(request: Request, account_id: Account, offset: Annotated[int, Query(ge=0)] = 0,
                      limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100) -> TemplateList:
        async with deps_of(request).sessions() as s:
            rows = await store.listing(s, account_id, offset, limit)
        return TemplateList(templates=[TemplateRef(id=i, name=n) for i, n in rows])

    @router.get("/templates/{ref}", response_model=TemplateOut, response_model_by_alias=True, tags=OWN_TAGS,
                responses=responses(401, 404, 503), summary="A template at its current version")
    async def get(request: Request, account_id: Account, ref: Ref) -> dict[str, Any]:
        return _out(await _get(request, account_id, ref))

    @router.put("/templates/{ref}", response_model=TemplateOut, response_model_by_alias=True, tags=OWN_TAGS,
                responses=responses(401, 404, 409, 413, 422, 503), summary="Save a new version")
    async def update(request: Request, account_id: Account, ref: Ref,
                     payload: Annotated[TemplateIn, Body()]) -> dict[str, Any]:
        return _out(await _save(request, account_id, ref, payload))

    @router.delete("/templates/{ref}", status_code=204, responses=responses(401, 404, 503), tags=OWN_TAGS,
                   summary="Delete a template (its versions stay for messages built from them)")
    async def delete(request: Request, account_id: Account, ref: Ref) -> Response:
        async with deps_of(request).sessions.begin() as s:
            if not await store.delete(s, account_id, ref):
                raise _missing(ref)
        return Response(status_code=204)

    @router.get("/templates/{ref}/versions", response_model=list[VersionOut], tags=OWN_TAGS,
                responses=responses(401, 404, 503), summary="A template's versions, newest first")
    async def versions(request: Request, account_id: Account, ref: Ref) -> list[VersionOut]:
        async with deps_of(request).sessions() as s:
            found = await store.versions(s, account_id, ref)
        if found is None:
            raise _missing(ref)
        return [VersionOut(version=v, created_at=at) for v, at in found]

    @router.get("/templates/{ref}/versions/{version}", response_model=TemplateOut, tags=OWN_TAGS,
                response_model_by_alias=True, responses=responses(401, 404, 503), summary="One version")
    async def version(request: Request, account_id: Account, ref: Ref,
                      version: Annotated[int, Path(ge=1)]) -> dict[str, Any]:
        return _out(await _get(request, account_id, ref, version))

    @router.post("/templates/{ref}/preview", response_model=Rendered, response_model_by_alias=True,
                 tags=OWN_TAGS, responses=responses(401, 404, 422, 503),
                 summary="The template rendered with data")
    async def preview(request: Request, account_id: Account, ref: Ref,
                      payload: Annotated[Preview, Body()]) -> dict[str, Any]:
        saved = await _get(request, account_id, ref, payload.version)
        return templates.render(saved.content, payload.data)

    # after /templates/{ref}/versions, which it would otherwise take
    @router.get("/templates/{start}/{length}", response_model=list[TemplateRef],
                responses=responses(401, 503), summary="List templates (SMTPeter-compatible)",
                tags=SMTPETER_TAGS)
    async def smtpeter_list(request: Request, account_id: Account,
                            start: Annotated[int, Path(ge=0)],
                            length: Annotated[int, Path(ge=1, le=MAX_LIST)]) -> list[TemplateRef]:
        async with deps_of(request).sessions() as s:
            rows = await store.listing(s, account_id, start, length)
        return [TemplateRef(id=i, name=n) for i, n in rows]

    return router


def _domain(request: Request) -> str:
    return deps_of(request).settings.message_id_domain
