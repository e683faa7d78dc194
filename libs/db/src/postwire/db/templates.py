"""Stored templates: create, new versions, read, list, delete (docs/templates.md).

A template is known by its integer id or by its name, unique per account among the templates not
deleted. Every save is a new version; messages name the version they were built from, so versions are
never changed or removed with the template (a delete only hides it and frees its name). Everything is
scoped to the account: another account's template is as unknown as a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.db.models import Template, TemplateVersion

# letters, digits, '-' and '_', not all digits (a reference of digits is an id)
NAME: Final = re.compile(r"^(?!\d+$)[A-Za-z0-9_-]{1,100}$")


class NameTaken(Exception):
    """Another template of the account already has this name."""


@dataclass(frozen=True)
class Saved:
    id: int
    name: str
    version: int
    content: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def _by_ref(account_id: str, ref: str | int) -> Any:
    """The live template ``ref`` names: an id (digits) or a name."""
    q = select(Template).where(Template.account_id == account_id, Template.deleted_at.is_(None))
    if isinstance(ref, int) or (ref.isascii() and ref.isdigit()):  # not "²": isdigit() alone takes it
        ident = int(ref)
        return q.where(Template.id == (ident if ident < 2**63 else -1))  # beyond BIGINT: no such id
    return q.where(Template.name == ref)


async def create(session: AsyncSession, account_id: str, name: str, content: dict[str, Any]) -> Saved:
    row = Template(account_id=account_id, name=name, version=1)
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise NameTaken(name) from None
    session.add(TemplateVersion(template_id=row.id, version=1, content=content))
    await session.flush()
    await session.refresh(row)
    return Saved(row.id, row.name, 1, content, row.created_at, row.updated_at)


async def save_version(session: AsyncSession, account_id: str, ref: str | int, content: dict[str, Any],
                       name: str | None = None) -> Saved | None:
    """A new version of the template ``ref`` (renamed to ``name`` when given); None when unknown."""
    row = (await session.execute(_by_ref(account_id, ref).with_for_update())).scalar()
    if row is None:
        return None
    if name is not None and name != row.name:
        try:
            async with session.begin_nested():
                row.name = name
                await session.flush()
        except IntegrityError:
            raise NameTaken(name) from None
    row.version += 1
    row.updated_at = func.now()
    session.add(TemplateVersion(template_id=row.id, version=row.version, content=content))
    await session.flush()
    await session.refresh(row)
    return Saved(row.id, row.name, row.version, content, row.created_at, row.updated_at)


async def get(session: AsyncSession, account_id: str, ref: str | int,
              version: int | None = None) -> Saved | None:
    """The live template ``ref`` at its current version (or at ``version``); None when unknown."""
    row = (await session.execute(_by_ref(account_id, ref))).scalar()
    if row is None:
        return None
    wanted = row.version if version is None else version
    saved = await session.get(TemplateVersion, (row.id, wanted))
    if saved is None:
        return None
    return Saved(row.id, row.name, wanted, saved.content, row.created_at, row.updated_at)


async def version_of(session: AsyncSession, account_id: str, template_id: int, version: int) -> Saved | None:
    """A version of a template by id, deleted or not: what a message built from it is resent with."""
    row = (await session.execute(select(Template).where(
        Template.account_id == account_id, Template.id == template_id))).scalar()
    saved = None if row is None else await session.get(TemplateVersion, (row.id, version))
    if row is None or saved is None:
        return None
    return Saved(row.id, row.name, version, saved.content, row.created_at, row.updated_at)


async def listing(session: AsyncSession, account_id: str, start: int,
                  length: int) -> Sequence[tuple[int, str]]:
    """(id, name) of the live templates, oldest first, ``length`` of them from the ``start``-th."""
    rows = await session.execute(
        select(Template.id, Template.name)
        .where(Template.account_id == account_id, Template.deleted_at.is_(None))
        .order_by(Template.id).offset(start).limit(length))
    return [(int(i), str(n)) for i, n in rows.all()]


async def versions(session: AsyncSession, account_id: str,
                   ref: str | int) -> Sequence[tuple[int, datetime]] | None:
    """(version, saved at) of the live template ``ref``, newest first; None when unknown."""
    row = (await session.execute(_by_ref(account_id, ref))).scalar()
    if row is None:
        return None
    found = await session.execute(select(TemplateVersion.version, TemplateVersion.created_at)
                                  .where(TemplateVersion.template_id == row.id)
                                  .order_by(TemplateVersion.version.desc()))
    return [(int(v), at) for v, at in found.all()]


async def delete(session: AsyncSession, account_id: str, ref: str | int) -> bool:
    """Hide the template and free its name; its versions stay for the messages built from them."""
    row = (await session.execute(_by_ref(account_id, ref))).scalar()
    if row is None:
        return False
    await session.execute(update(Template).where(Template.id == row.id).values(deleted_at=func.now()))
    return True
