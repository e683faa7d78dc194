"""Finding an archived message for an account (postwire.core.archive): /v1/resend and SMTPeter's message
calls. Another account's id is a 404 like an unknown one, so ids never leak across accounts."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC
from typing import Final

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError

from postwire.api_gateway.errors import ApiError
from postwire.core import archive, personalised
from postwire.core.bodies import BodyStore
from postwire.v1 import envelope_pb2

# what a message id can look like (postwire.core.ids: base32); anything else is unknown without asking
MESSAGE_ID: Final = re.compile(r"^[0-9A-Za-z_-]{1,40}$")


async def archived_message(js: JetStreamContext, account_id: str,
                           message_id: str) -> envelope_pb2.InboundMessage:
    """The archived message known by ``message_id`` (narrowed to its recipient for a per-recipient id)."""
    if not MESSAGE_ID.match(message_id):  # no id looks like that; in a NATS subject it was a 503 (fuzzer)
        raise gone(message_id)
    try:
        found = await archive.load(js, message_id)
    except (nats.errors.Error, TimeoutError) as e:
        raise unavailable() from e
    if found is None or found.account_id != account_id:  # another account's id is just as unknown
        raise gone(message_id)
    return found


async def archived_copy(bodies: BodyStore, message: envelope_pb2.InboundMessage, message_id: str) -> bytes:
    """The MIME of ``message_id`` as it was accepted (before CSS inlining, tracking and DKIM): for a
    personalised message, its recipient's copy rendered from the template and data it was sent with."""
    raw = await archived_body(bodies, message, message_id)
    if not message.HasField("personalisation"):
        return raw
    rcpt = next((r for r in message.recipients
                 if message.recipient_ids.get(r, message.message_id) == message_id), message.recipients[0])
    at = message.accepted_at.ToDatetime(UTC)
    try:  # in a thread: a runaway template takes up to its step limit to fail
        compiled = await asyncio.to_thread(personalised.read, raw)
        own = envelope_pb2.PersonalisedMessage.FromString(raw).recipient_data.get(rcpt, b"")
        return await asyncio.to_thread(personalised.mime_for, compiled, rcpt, own, message_id, at)
    except personalised.RenderFailed as e:
        raise ApiError(404, "not_found", f"message {message_id!r} was never sent: its template could not "
                       f"be rendered for its recipient ({e})") from None


async def archived_body(bodies: BodyStore, message: envelope_pb2.InboundMessage, message_id: str) -> bytes:
    """The body as it was accepted: MIME, or a personalised message's template and data."""
    try:
        return await bodies.get(message.body)
    except ObjectNotFoundError:
        raise gone(message_id) from None
    except (nats.errors.Error, TimeoutError) as e:
        raise unavailable() from e


def gone(message_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no message {message_id[:40]!r} in this account (unknown, or older "
                    "than the retention period)")


def unavailable() -> ApiError:
    return ApiError(503, "queue_unavailable", "the message archive (NATS) is unavailable; retry later",
                    headers={"Retry-After": "5"})
