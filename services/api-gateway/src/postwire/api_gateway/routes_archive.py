"""SMTPeter's calls on a sent message, from the archive (docs/smtpeter.md, "Retrieving sent messages").

GET /v1/recipient/{id}, /v1/envelope/{id}      the recipient and the envelope sender
GET /v1/text/{id}, /v1/html/{id}              the text and HTML bodies, decoded
GET /v1/headers/{id} (also /v1/header/{id})   the header block
GET /v1/mime/{id}                             the whole message
GET /v1/attachments/{id}[/{name or rank}]     the attachments: a list, or one of them
GET /v1/embeds/{id}[/{name or rank}]          content shown by cid: in the HTML: a list, or one item

All of them as text/plain but the list (JSON) and the items (their own type), as SMTPeter answers. Every
id a send returned works; the message is the one accepted, before CSS inlining, tracking and DKIM. An
unknown id, one past the retention period and another account's are all 404.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from postwire.api_gateway import archived_parts as parts
from postwire.api_gateway.accept import deps_of
from postwire.api_gateway.archived import archived_copy, archived_message
from postwire.api_gateway.auth import Account
from postwire.api_gateway.errors import ApiError, responses
from postwire.v1 import envelope_pb2

MessageId = Annotated[str, Path(description="Any id a send route returned (one per recipient).")]
NameOrRank = Annotated[str, Path(description="The item's name, or its rank in the list (from 0).")]
TEXT = "text/plain; charset=utf-8"
# a browser must not render what a customer's message holds on the API's origin
SAFE = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


class ArchivedPart(BaseModel):
    rank: int = Field(description="Its place in the message, from 0: …/{id}/{rank} fetches it.")
    name: str = Field(description="Its file name (`part-<rank>` when it has none): …/{id}/{name} fetches it.")
    type: str = Field(description="Its content type.")
    size: int = Field(description="Bytes, decoded.")
    cid: str | None = Field(default=None, description="Its Content-ID (embedded content).")


def _text(value: str) -> Response:
    return Response(value.encode(), media_type=TEXT, headers=SAFE)


def _recipient(message: envelope_pb2.InboundMessage, message_id: str) -> str:
    """The recipient this id was given for; a message sent with one id for all lists them, a line each."""
    mine = [r for r, rid in message.recipient_ids.items() if rid == message_id]
    return "\n".join(mine or message.recipients)


def archive_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["smtpeter"])
    found = responses(401, 404, 503)

    async def load(request: Request, account_id: str, message_id: str) -> tuple[envelope_pb2.InboundMessage,
                                                                                 bytes]:
        deps = deps_of(request)
        message = await archived_message(deps.js, account_id, message_id)
        return message, await archived_copy(deps.bodies, message, message_id)

    @router.get("/recipient/{message_id}", response_class=Response, responses=found,
                summary="The recipient of a sent message (text/plain)")
    async def recipient(request: Request, account_id: Account, message_id: MessageId) -> Response:
        message = await archived_message(deps_of(request).js, account_id, message_id)
        return _text(_recipient(message, message_id))

    @router.get("/envelope/{message_id}", response_class=Response, responses=found,
                summary="The envelope sender a message was accepted with (text/plain)",
                description="As given (`envelope`, MAIL FROM), or the From address; bounces go to a VERP "
                            "address of Postwire's, not to this one, unless bounce tracking was off.")
    async def envelope(request: Request, account_id: Account, message_id: MessageId) -> Response:
        message = await archived_message(deps_of(request).js, account_id, message_id)
        return _text(message.mail_from)

    def body_route(path: str, summary: str, render: Callable[[bytes], str]) -> None:
        @router.get(f"/{path}/{{message_id}}", response_class=Response, responses=found, summary=summary,
                    name=f"archived_{path}")
        async def body(request: Request, account_id: Account, message_id: MessageId) -> Response:
            _, raw = await load(request, account_id, message_id)
            return _text(render(raw))

    body_route("text", "The text body of a sent message (text/plain; empty without one)",
               lambda raw: parts.body_text(parts.parse(raw), "plain"))
    body_route("html", "The HTML body of a sent message (as text/plain; empty without one)",
               lambda raw: parts.body_text(parts.parse(raw), "html"))
    body_route("headers", "The header block of a sent message (text/plain)", parts.header_block)
    body_route("header", "The same as /v1/headers/{id} (SMTPeter's documentation spells it so)",
               parts.header_block)
    body_route("mime", "The whole sent message (text/plain)",
               lambda raw: raw.decode("utf-8", errors="replace"))

    def list_routes(path: str, what: str, pick: Callable[[EmailMessage], list[parts.Part]]) -> None:
        @router.get(f"/{path}/{{message_id}}", response_model=list[ArchivedPart], responses=found,
                    summary=f"The {what} of a sent message", name=f"archived_{path}")
        async def listing(request: Request, account_id: Account, message_id: MessageId) -> list[ArchivedPart]:
            _, raw = await load(request, account_id, message_id)
            return [ArchivedPart(rank=p.rank, name=p.name, type=p.content_type, size=len(p.data),
                                 cid=p.content_id) for p in pick(parts.parse(raw))]

        @router.get(f"/{path}/{{message_id}}/{{name_or_rank}}", response_class=Response, responses=found,
                    summary=f"One of the {what} of a sent message, by name or rank",
                    name=f"archived_{path}_item")
        async def item(request: Request, account_id: Account, message_id: MessageId,
                       name_or_rank: NameOrRank) -> Response:
            _, raw = await load(request, account_id, message_id)
            chosen = parts.pick(pick(parts.parse(raw)), name_or_rank)
            if chosen is None:
                raise ApiError(404, "not_found", f"message {message_id!r} has no {what[:-1]} "
                               f"{name_or_rank[:100]!r}")
            filename = chosen.name.replace('"', "").replace("\\", "")
            return Response(chosen.data, media_type=chosen.content_type,
                            headers={**SAFE, "Content-Disposition": f'attachment; filename="{filename}"'})

    list_routes("attachments", "attachments", parts.attachments)
    list_routes("embeds", "embedded items", parts.embeds)
    return router
