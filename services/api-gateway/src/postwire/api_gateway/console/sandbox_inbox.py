"""The console's Sandbox page: the inbox of the local run's catch-all MX (postwire.cli.sandbox), like
Mailpit: each caught message rendered, with its headers and source (docs/console.md).

Only in the local run (POSTWIRE_SANDBOX_DIR set). A user sees the caught messages that Postwire sent for
their account: a message's Message-ID names its Postwire id, looked up among the account's messages, so
one account's people never see another's mail, and mail not sent by Postwire is not shown.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from postwire.api_gateway.console.pages import deps_of, page, preview
from postwire.api_gateway.console.sessions import current
from postwire.core import sandbox_store
from postwire.db.console_users import Session
from postwire.db.models import Message

Current = Annotated[Session, Depends(current)]
_MESSAGE_ID: Final = re.compile(rb"^Message-ID:[ \t]*<([0-9A-Za-z]{1,40})@", re.IGNORECASE | re.MULTILINE)
PAGE: Final = 50


def _postwire_id(raw: bytes) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode() if found else None


async def _owned(request: Request, account_id: str, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    async with deps_of(request).sessions() as s:
        rows = await s.execute(select(Message.id).where(Message.account_id == account_id,
                                                        Message.id.in_(ids)))
    return {str(r) for r in rows.scalars()}


def _folder(request: Request) -> Path | None:
    folder: Path | None = deps_of(request).settings.sandbox_dir
    return folder


def sandbox_router() -> APIRouter:
    router = APIRouter(prefix="/console/sandbox", include_in_schema=False)

    @router.get("")
    async def inbox(request: Request, session: Current,
                    page_no: Annotated[int, Query(alias="page", ge=1, le=1000)] = 1) -> Response:
        folder = _folder(request)
        if folder is None:
            return page(request, "sandbox.html", session, enabled=False, rows=[])
        listed = sandbox_store.list_messages(folder, limit=PAGE * 4, offset=(page_no - 1) * PAGE * 4)
        full = [m for m in (sandbox_store.read_message(folder, c.id) for c in listed) if m is not None]
        ids = {m.id: _postwire_id(m.raw or b"") for m in full}
        mine = await _owned(request, session.user.account_id, [i for i in ids.values() if i])
        rows = [m for m in full if ids[m.id] in mine][:PAGE]
        return page(request, "sandbox.html", session, enabled=True, rows=rows, page_no=page_no,
                    more=len(listed) == PAGE * 4)

    async def _mine(request: Request, session: Session, caught_id: str,
                    ) -> tuple[sandbox_store.CaughtMessage, str, EmailMessage] | None:
        folder = _folder(request)
        found = (sandbox_store.read_message(folder, caught_id)
                 if folder is not None and sandbox_store.is_message_id(caught_id) else None)
        pid = _postwire_id(found.raw or b"") if found is not None else None
        if found is None or pid is None or not await _owned(request, session.user.account_id, [pid]):
            return None
        msg = message_from_bytes(found.raw or b"", policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return found, pid, msg

    @router.get("/{caught_id}/html")
    async def caught_html(request: Request, session: Current, caught_id: str) -> Response:
        """The caught HTML for the page's frame, where its own (inlined) styles apply."""
        mine = await _mine(request, session, caught_id)
        part = mine[2].get_body(preferencelist=("html",)) if mine is not None else None
        if part is None:
            return page(request, "error.html", session, status_code=404, message="No HTML to show.")
        return preview(str(part.get_content()))

    @router.get("/{caught_id}")
    async def caught(request: Request, session: Current, caught_id: str) -> Response:
        mine = await _mine(request, session, caught_id)
        if mine is None:
            return page(request, "error.html", session, status_code=404,
                        message="No such message in this account's sandbox inbox.")
        found, pid, msg = mine
        html_part = msg.get_body(preferencelist=("html",))
        text_part = msg.get_body(preferencelist=("plain",))
        return page(request, "sandbox_message.html", session, m=found, postwire_id=pid,
                    headers=[(k, str(v)) for k, v in msg.items()],
                    html=html_part is not None,
                    text=str(text_part.get_content()) if text_part is not None else None,
                    source=(found.raw or b"").decode("utf-8", "replace"))

    return router
