"""Publishing events to the EVENTS stream with a stable id, so redeliveries deduplicate."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from nats.js.api import Header

from postwire.core.timestamps import stamp_now
from postwire.core.topology import event_subject
from postwire.v1 import envelope_pb2

EVENT_TYPES = ("accepted", "delivered", "deferred", "failed", "bounced", "complained", "suppressed", "opened",
               "clicked", "bulk_paused", "bulk_resumed", "unsubscribed")


def event_id(message_id: str, recipient: str, event_type: str, attempt: int = 0) -> str:
    """Deterministic: the same outcome of the same attempt always gets the same id."""
    return f"{message_id}.{event_type}.{attempt}.{recipient.lower()}"


def make_event(event_type: str, *, account_id: str, message_id: str, recipient: str,
               attempt: int = 0, **fields: Any) -> envelope_pb2.Event:
    """An event with a stable id; ``fields`` are further Event fields (smtp_code, response, …)."""
    ev = envelope_pb2.Event(
        event_id=event_id(message_id, recipient, event_type, attempt), type=event_type,
        account_id=account_id, message_id=message_id, recipient=recipient, attempt=attempt, **fields,
    )
    stamp_now(ev.at)
    return ev


def event_message(ev: envelope_pb2.Event) -> tuple[str, bytes, dict[str, str]]:
    """(subject, payload, headers) of ``ev``, for a batch (PipelinedJetStream.publish_many)."""
    return event_subject(ev.account_id, ev.type), ev.SerializeToString(), {Header.MSG_ID: ev.event_id}


async def publish_event(js: JetStreamContext, ev: envelope_pb2.Event, timeout: float = 5.0) -> None:
    subject, payload, headers = event_message(ev)
    await js.publish(subject, payload, headers=headers, timeout=timeout)
