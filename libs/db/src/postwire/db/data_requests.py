"""Data subject requests: everything an account holds about one address, exported or erased, and the audit
record of each request (table ``data_requests``; docs/data-requests.md).

PostgreSQL's half lives here; the NATS half (the message archive, its bodies, the TRACKING bucket, the
SUPPRESSIONS bucket) is the api-gateway's, which calls :func:`erase` and then reaches NATS with the message
ids :func:`message_ids` finds. Both halves are idempotent, and :func:`message_ids` also finds what was
erased already, so a repeated erasure completes one whose NATS half failed.

Erasure replaces the address by a stable pseudonym (:func:`pseudonym`) in events and recipients rows (an
event id ends in the address, so it is rewritten too, in the webhook log and dead letters as well), drops
the fields of those events that may hold personal data (:data:`SCRUBBED`), blanks the subject and metadata
of messages addressed to no one else, and keeps a suppression as a hash (postwire.db.suppressions
``hashed_address``), so the address stays suppressed without being written down. The events keep their
type, time, message, tags and ``unique`` flag, so ``event_counts`` (whose triggers re-count an updated
row: migrations 0010, 0011) and the statistics stay as they were.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core.ids import new_id
from postwire.db import suppressions
from postwire.db.events_query import event_row_json
from postwire.db.models import DataRequest, Event, Message, Recipient, Suppression, WebhookDeadLetter
from postwire.db.suppressions import SuppressionInfo

ERASED_DOMAIN: Final = "erased.invalid"
# event fields that may name or track a person: reply texts quote the address, opens and clicks carry the
# reader's IP and user agent, a link may carry their id, the subject and metadata are the sender's words
SCRUBBED: Final = ("response", "client_ip", "user_agent", "url", "orcpt", "subject")
KINDS: Final = ("export", "erasure")
_CHUNK: Final = 5000


def normalise(address: str) -> str:
    return address.strip().lower()


def pseudonym(account_id: str, address: str) -> str:
    """``erased-<16 hex>@erased.invalid``: the same for every erasure of ``address`` in one account (so an
    erased recipient's events still belong together) and different in each account. A pseudonym, not an
    anonym: whoever knows the address and the account id can compute it."""
    digest = hashlib.sha256(f"{account_id}:{normalise(address)}".encode()).hexdigest()[:16]
    return f"erased-{digest}@{ERASED_DOMAIN}"


def _erased_event_id(event_id: str, recipient: str, alias: str) -> str:
    """An event id ends in its recipient, lower-cased (postwire.core.events.event_id): swap in ``alias``."""
    tail = recipient.lower()
    if event_id.lower().endswith(tail):
        return event_id[:len(event_id) - len(tail)] + alias
    return f"erased-{hashlib.sha256(event_id.encode()).hexdigest()[:32]}.{alias}"


# --------------------------------------------------------------------------------------------- export


@dataclass
class Export:
    """What the account holds about one address, PostgreSQL's part; each list at most its limit long."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    suppressions: list[dict[str, Any]] = field(default_factory=list)
    truncated: dict[str, bool] = field(default_factory=dict)


async def export(session: AsyncSession, account_id: str, address: str, *, max_messages: int,
                 max_events: int) -> Export:
    """The address's messages (each with its recipient row), events (opens and clicks included) and
    suppressions, oldest first. Only this account's rows: another account's, for the same address, never."""
    wanted = normalise(address)
    out = Export()
    rows = (await session.execute(
        select(Recipient, Message)
        .outerjoin(Message, (Message.id == Recipient.message_id) & (Message.account_id == account_id))
        .where(Recipient.account_id == account_id, func.lower(Recipient.address) == wanted)
        .order_by(Recipient.updated_at, Recipient.message_id).limit(max_messages + 1))).all()
    out.truncated["messages"] = len(rows) > max_messages
    out.messages = [_message_json(r, m) for r, m in rows[:max_messages]]
    events = list(await session.scalars(
        select(Event).where(Event.account_id == account_id, func.lower(Event.recipient) == wanted)
        .order_by(Event.at, Event.seq).limit(max_events + 1)))
    out.truncated["events"] = len(events) > max_events
    out.events = [event_row_json(e) for e in events[:max_events]]
    found = await session.scalars(select(Suppression).where(
        Suppression.account_id == account_id,
        Suppression.address.in_((wanted, suppressions.hashed_address(wanted)))))
    out.suppressions = [_suppression_json(SuppressionInfo.of(s)) for s in found]
    return out


def _message_json(rcpt: Recipient, msg: Message | None) -> dict[str, Any]:
    return {
        "id": rcpt.message_id,
        "mail_from": msg.mail_from if msg else None, "subject": msg.subject if msg else None,
        "tags": list(msg.tags or []) if msg else [], "metadata": dict(msg.metadata_ or {}) if msg else {},
        "template_id": msg.template_id if msg else None, "source": msg.source if msg else None,
        "size": msg.size if msg else None, "created_at": _iso(msg.created_at) if msg else None,
        "recipient": {"address": rcpt.address, "status": rcpt.status, "smtp_code": rcpt.smtp_code,
                      "enhanced_status": rcpt.enhanced_status, "response": rcpt.response,
                      "mx_host": rcpt.mx_host, "attempts": rcpt.attempts,
                      "updated_at": _iso(rcpt.updated_at)},
    }


def _suppression_json(info: SuppressionInfo) -> dict[str, Any]:
    return {"address": info.address, "reason": info.reason, "source": info.source,
            "source_event_id": info.source_event_id, "created_at": _iso(info.created_at),
            "expires_at": _iso(info.expires_at) if info.expires_at else None,
            "active": info.active(), "erased": suppressions.is_hashed(info.address)}


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def message_ids(session: AsyncSession, account_id: str, address: str, limit: int | None = None
                      ) -> list[str]:
    """The ids of the messages the address received (as given to the sender: per-recipient ids where
    the send had them), also those already erased, oldest first."""
    query = (select(Recipient.message_id).where(
        Recipient.account_id == account_id,
        or_(func.lower(Recipient.address) == normalise(address),
            Recipient.address == pseudonym(account_id, address)))
        .order_by(Recipient.updated_at, Recipient.message_id))
    if limit is not None:
        query = query.limit(limit)
    return list(await session.scalars(query))


# -------------------------------------------------------------------------------------------- erasure


@dataclass
class Erased:
    """What one erasure changed in PostgreSQL (0 everywhere when it had been erased already)."""

    events: int = 0
    recipients: int = 0
    messages: int = 0
    suppressions: int = 0
    webhook_log: int = 0
    # the suppression now kept as a hash, to be written to the SUPPRESSIONS bucket after the commit
    suppression: SuppressionInfo | None = None

    def counts(self) -> dict[str, int]:
        return {"events": self.events, "recipients": self.recipients, "messages": self.messages,
                "suppressions": self.suppressions, "webhook_log": self.webhook_log}


_RENAME_EVENTS = text("""
UPDATE events AS e SET event_id = m.new_id, recipient = :alias,
       data = (e.data - CAST(:scrubbed AS text[])) || '{"metadata": {}}'::jsonb
FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS m(old_id, new_id)
WHERE e.event_id = m.old_id
""")
_RENAME_ATTEMPTS = text("""
UPDATE webhook_attempts AS w SET event_id = m.new_id
FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS m(old_id, new_id)
WHERE w.account_id = :account AND w.event_id = m.old_id
""")


async def erase(session: AsyncSession, account_id: str, address: str) -> Erased:
    """Pseudonymise the address's rows in one transaction (the caller's). Idempotent: a second call finds
    nothing under the address and changes nothing."""
    wanted, alias = normalise(address), pseudonym(account_id, address)
    done = Erased()
    renamed = await _erase_events(session, account_id, wanted, alias, done)
    # a recipient row already renamed for the same message (a send recorded again after an erasure): one
    await session.execute(delete(Recipient).where(
        Recipient.account_id == account_id, func.lower(Recipient.address) == wanted,
        Recipient.message_id.in_(select(Recipient.message_id).where(
            Recipient.account_id == account_id, Recipient.address == alias).scalar_subquery())))
    ids = list(await session.scalars(
        update(Recipient).where(Recipient.account_id == account_id, func.lower(Recipient.address) == wanted)
        .values(address=alias, response=None).returning(Recipient.message_id)))
    done.recipients = len(ids)
    if ids:
        others = select(Recipient.message_id).where(Recipient.message_id == Message.id,
                                                    Recipient.address != alias).exists()
        result = await session.execute(
            update(Message).where(Message.account_id == account_id, Message.id.in_(ids), ~others)
            .values(subject="", metadata_={}))
        done.messages = int(result.rowcount)  # type: ignore[attr-defined]
    done.webhook_log += await _erase_webhook_log(session, account_id, alias, renamed)
    done.suppression, done.suppressions = await _hash_suppression(session, account_id, wanted, alias,
                                                                  renamed)
    await session.execute(update(DataRequest).where(
        DataRequest.account_id == account_id, func.lower(DataRequest.address) == wanted,
        DataRequest.address.is_not(None)).values(address=None))
    return done


async def _erase_events(session: AsyncSession, account_id: str, wanted: str, alias: str,
                        done: Erased) -> dict[str, str]:
    """Rename and scrub the address's events; their old ids by new id (for the webhook log)."""
    rows = (await session.execute(select(Event.event_id, Event.recipient).where(
        Event.account_id == account_id, func.lower(Event.recipient) == wanted))).all()
    renamed = {old: _erased_event_id(old, rcpt, alias) for old, rcpt in rows}
    if not renamed:
        return renamed
    # the same event recorded again under its old id after an earlier erasure: keep the erased one
    taken = set(await session.scalars(select(Event.event_id).where(Event.event_id.in_(renamed.values()))))
    twice = [old for old, new in renamed.items() if new in taken]
    if twice:
        await session.execute(delete(Event).where(Event.event_id.in_(twice)))
    pairs = [(old, new) for old, new in renamed.items() if new not in taken]
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start:start + _CHUNK]
        await session.execute(_RENAME_EVENTS, {"alias": alias, "scrubbed": list(SCRUBBED),
                                               "old": [o for o, _ in chunk], "new": [n for _, n in chunk]})
    done.events = len(renamed)
    return renamed


async def _erase_webhook_log(session: AsyncSession, account_id: str, alias: str,
                             renamed: dict[str, str]) -> int:
    """The webhook notifier's log names events by id, and a dead letter holds the event as posted."""
    if not renamed:
        return 0
    changed = 0
    olds, news = list(renamed), [renamed[o] for o in renamed]
    for start in range(0, len(olds), _CHUNK):
        result = await session.execute(_RENAME_ATTEMPTS, {"account": account_id,
                                                          "old": olds[start:start + _CHUNK],
                                                          "new": news[start:start + _CHUNK]})
        changed += int(result.rowcount)  # type: ignore[attr-defined]
    letters = [letter for start in range(0, len(olds), _CHUNK) for letter in await session.scalars(
        select(WebhookDeadLetter).where(WebhookDeadLetter.account_id == account_id,
                                        WebhookDeadLetter.event_id.in_(olds[start:start + _CHUNK])))]
    for letter in letters:
        payload = dict(letter.payload)
        payload.update({"id": renamed[letter.event_id], "recipient": alias, "metadata": {}})
        payload.update({k: None for k in SCRUBBED if k in payload})
        letter.payload, letter.event_id = payload, renamed[letter.event_id]
        changed += 1
    return changed


async def _hash_suppression(session: AsyncSession, account_id: str, wanted: str, alias: str,
                            renamed: dict[str, str]) -> tuple[SuppressionInfo | None, int]:
    """Replace the address's suppression by its hashed form (same reason, source, times): it still
    suppresses, and names no one. The hashed entry as it now stands, and 1 when a row was converted."""
    hashed = suppressions.hashed_address(wanted)
    plain = await session.get(Suppression, (account_id, wanted))
    if plain is None:
        existing = await session.get(Suppression, (account_id, hashed))
        return (SuppressionInfo.of(existing) if existing is not None else None), 0
    source_event = plain.source_event_id
    if source_event is not None:
        source_event = renamed.get(source_event) or (
            _erased_event_id(source_event, wanted, alias) if source_event.lower().endswith(wanted)
            else source_event)
    values = {"reason": plain.reason, "source": plain.source, "source_event_id": source_event,
              "created_at": plain.created_at, "expires_at": plain.expires_at}
    await session.delete(plain)
    await session.flush()
    existing = await session.get(Suppression, (account_id, hashed))
    if existing is None:
        existing = Suppression(account_id=account_id, address=hashed, **values)
        session.add(existing)
    else:  # erased before, suppressed again as written since: the newer entry's terms
        values["created_at"] = min(existing.created_at, plain.created_at)
        for name, value in values.items():
            setattr(existing, name, value)
    await session.flush()
    return SuppressionInfo.of(existing), 1


# ---------------------------------------------------------------------------------------------- audit


async def record(session: AsyncSession, account_id: str, kind: str, address: str, requested_by: str,
                 counts: dict[str, int], *, keep_address: bool = False) -> DataRequest:
    """The audit record of one request: who asked, when, what was exported or erased, and the address's
    pseudonym. ``keep_address``: an export to be read later (SMTPeter's two steps) keeps the address."""
    assert kind in KINDS
    row = DataRequest(id=new_id("dr_"), account_id=account_id, kind=kind,
                      subject=pseudonym(account_id, address),
                      address=normalise(address) if keep_address else None, requested_by=requested_by,
                      counts=counts, created_at=datetime.now(UTC))
    session.add(row)
    await session.flush()
    return row


async def get(session: AsyncSession, account_id: str, request_id: str) -> DataRequest | None:
    row = await session.get(DataRequest, request_id)
    return row if row is not None and row.account_id == account_id else None


async def listing(session: AsyncSession, account_id: str, limit: int) -> list[DataRequest]:
    """The account's requests, newest first."""
    return list(await session.scalars(
        select(DataRequest).where(DataRequest.account_id == account_id)
        .order_by(DataRequest.created_at.desc(), DataRequest.id.desc()).limit(limit)))


async def forget_exports(session: AsyncSession, account_id: str, older_than: datetime) -> None:
    """Clear the address of the account's two-step exports past their lifetime."""
    await session.execute(update(DataRequest).where(
        DataRequest.account_id == account_id, DataRequest.address.is_not(None),
        DataRequest.created_at < older_than).values(address=None))
