"""The message archive behind POST /v1/resend: every routed message, kept for the retention period.

The router stores each InboundMessage under ``archive.<message id>`` (ARCHIVE stream, one entry per
subject, aged out after POSTWIRE_MESSAGE_RETENTION_DAYS; large bodies stay in the BODIES bucket, which
lives at least as long). A message sent with one id per recipient (/v1/send) also gets a small alias
entry per extra id that points at the stored message, so any id the customer was given can be resent.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import NotFoundError

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
