"""The message archive behind POST /v1/resend: every routed message, kept for the retention period.

The router stores each InboundMessage under ``archive.<message id>`` (ARCHIVE stream, one entry per
subject, aged out after POSTWIRE_MESSAGE_RETENTION_DAYS; large bodies stay in the BODIES bucket, which
lives at least as long). A message sent with one id per recipient (/v1/send) also gets a small alias
entry per extra id that points at the stored message, so any id the customer was given can be resent.
A data subject's erasure (:func:`erase_recipient`) takes one recipient out of the archive.
"""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import NotFoundError, ObjectNotFoundError

from postwire.core.bodies import BodyStore
from postwire.core.topology import ARCHIVE, archive_subject
from postwire.v1 import envelope_pb2

ALIAS_HEADER = "Postwire-Archive-Of"


def archive_messages(inbound: envelope_pb2.InboundMessage) -> list[tuple[str, bytes, dict[str, str]]]:
    """(subject, payload, headers) of ``inbound``'s archive entry and of an alias for each of its
    per-recipient ids; idempotent to publish (dedup ids)."""
    found: list[tuple[str, bytes, dict[str, str]]] = [
        (archive_subject(inbound.message_id), inbound.SerializeToString(),
         {Header.MSG_ID.value: f"archive.{inbound.message_id}"})]
    for rcpt, rid in inbound.recipient_ids.items():
        if rid == inbound.message_id:
            continue
        alias = envelope_pb2.InboundMessage(message_id=rid, account_id=inbound.account_id, recipients=[rcpt])
        found.append((archive_subject(rid), alias.SerializeToString(),
                      {Header.MSG_ID.value: f"archive.{rid}", ALIAS_HEADER: inbound.message_id}))
    return found


async def archive(js: JetStreamContext, inbound: envelope_pb2.InboundMessage, timeout: float = 5.0) -> None:
    """Store ``inbound`` and an alias for each of its per-recipient ids; idempotent (dedup ids)."""
    for subject, payload, headers in archive_messages(inbound):
        await js.publish(subject, payload, headers=headers, timeout=timeout)


async def load(js: JetStreamContext, message_id: str) -> envelope_pb2.InboundMessage | None:
    """The archived message known by ``message_id``, or None when unknown or aged out. For an alias: the
    stored message narrowed to the alias's recipient (and that recipient's DSN parameters)."""
    entry = await _get(js, message_id)
    if entry is None:
        return None
    data, headers = entry
    found = envelope_pb2.InboundMessage.FromString(data)
    target = (headers or {}).get(ALIAS_HEADER)
    if not target:
        return found
    stored = await _get(js, target)
    if stored is None:
        return None
    original = envelope_pb2.InboundMessage.FromString(stored[0])
    rcpt = found.recipients[0]
    narrowed = envelope_pb2.InboundMessage()
    narrowed.CopyFrom(original)
    narrowed.message_id = message_id
    del narrowed.recipients[:]
    narrowed.recipients.append(rcpt)
    narrowed.recipient_ids.clear()
    narrowed.recipient_dsn.clear()
    if rcpt in original.recipient_dsn:
        narrowed.recipient_dsn[rcpt].CopyFrom(original.recipient_dsn[rcpt])
    return narrowed


async def _get(js: JetStreamContext, message_id: str) -> tuple[bytes, dict[str, str] | None] | None:
    if not message_id or any(c in message_id for c in ".*> \t"):
        return None
    try:
        msg = await js.get_last_msg(ARCHIVE, archive_subject(message_id), direct=True)
    except NotFoundError:
        return None
    return msg.data or b"", msg.headers


async def stored_id(js: JetStreamContext, message_id: str) -> str | None:
    """The id the message known by ``message_id`` is stored under (an alias's target, else the id
    itself); None when unknown or aged out."""
    entry = await _get(js, message_id)
    if entry is None:
        return None
    return (entry[1] or {}).get(ALIAS_HEADER) or message_id


async def erase_recipient(js: JetStreamContext, bodies: BodyStore, message_id: str, recipient: str,
                          timeout: float = 5.0) -> int:
    """Remove ``recipient`` (any case) from the archived message known by ``message_id`` (a data subject's
    erasure, docs/data-requests.md); how many archive entries were deleted or rewritten (0: nothing of
    theirs was left, so a repeated erasure changes nothing).

    The recipient's alias entry is deleted. The stored message loses the recipient (its recipients, ids and
    DSN parameters, and a personalised message its variables, rewritten in the BODIES bucket under the
    same name); when nobody else is left it is deleted whole, with its stored body. A shared MIME body is
    left as it is: the other recipients' copy is the same bytes. Rewritten entries are published without a
    Nats-Msg-Id (the stream keeps one message per subject), so a dedup window never swallows them.
    """
    entry = await _get(js, message_id)
    if entry is None:
        return 0
    changed = 0
    data, headers = entry
    target = (headers or {}).get(ALIAS_HEADER)
    if target:
        await js.purge_stream(ARCHIVE, subject=archive_subject(message_id))
        changed += 1
        stored = await _get(js, target)
        if stored is None:
            return changed
        data, message_id = stored[0], target
    found = envelope_pb2.InboundMessage.FromString(data)
    wanted = recipient.lower()
    mine = [r for r in found.recipients if r.lower() == wanted]
    if not mine:
        return changed
    for rcpt in mine:
        found.recipient_ids.pop(rcpt, None)
        found.recipient_dsn.pop(rcpt, None)
    others = [r for r in found.recipients if r.lower() != wanted]
    if not others:
        await js.purge_stream(ARCHIVE, subject=archive_subject(message_id))
        with contextlib.suppress(ObjectNotFoundError):
            await bodies.delete(found.body)
        return changed + 1
    del found.recipients[:]
    found.recipients.extend(others)
    if found.HasField("personalisation"):
        body = envelope_pb2.PersonalisedMessage.FromString(await bodies.get(found.body))
        for rcpt in mine:
            body.recipient_data.pop(rcpt, None)
        rewritten = body.SerializeToString()
        if found.body.WhichOneof("location") == "object_name":  # same name: every reference stays valid
            found.body.CopyFrom(await bodies.put(found.body.object_name, rewritten, inline_max=0))
        else:
            found.body.CopyFrom(envelope_pb2.Body(inline=rewritten, size=len(rewritten)))
    await js.publish(archive_subject(message_id), found.SerializeToString(), timeout=timeout)
    return changed + 1
