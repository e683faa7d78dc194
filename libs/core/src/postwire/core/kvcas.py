"""Read and conditionally write one JSON value of a KV bucket (optimistic concurrency on the revision).

A write names the revision it read (``Nats-Expected-Last-Subject-Sequence``): when another writer came
first the stream refuses it and the caller reads again. Both go through :class:`PipelinedJetStream`, so
each is one message on the connection's shared reply subscription (nats-py's KeyValue.get/update make
a fresh inbox per call). Used by the shared limits (sharedlimits.py) and the leader leases (leader.py).
"""

from __future__ import annotations

import json
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.js import api

from postwire.core.jetstream import PipelinedJetStream

log = structlog.get_logger(__name__)

# JSStreamWrongLastSequenceErrF / JSStreamWrongLastSequenceConstantErr: someone else wrote first
_WRONG_LAST_SEQUENCE = (10071, 10164)
# errors that mean "NATS could not answer", as opposed to a refused write
UNREACHABLE = (nats.errors.Error, TimeoutError, OSError)

Value = dict[str, Any]


class Conflict(Exception):
    """The key changed since it was read."""


async def read(js: PipelinedJetStream, bucket: str, key: str, timeout: float) -> tuple[Value | None, int]:
    """The key's value (None when absent, deleted or unreadable) and its revision (0: never written).
    Raises what nats-py raises when NATS does not answer."""
    msg = await js.direct_get_last(f"KV_{bucket}", f"$KV.{bucket}.{key}", timeout=timeout)
    if msg is None:
        return None, 0
    headers = msg.headers or {}
    revision = int(headers.get("Nats-Sequence", 0))
    if headers.get("KV-Operation") in ("DEL", "PURGE"):
        return None, revision
    try:
        value = json.loads(msg.data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.error("kv.unreadable_value", bucket=bucket, key=key)  # overwritten by the next write
        return None, revision
    return value, revision


async def write(js: PipelinedJetStream, bucket: str, key: str, value: Value, revision: int,
                timeout: float) -> int:
    """Store ``value`` if the key is still at ``revision`` (0: absent); the new revision. Raises
    :class:`Conflict` when it is not, and what nats-py raises when NATS does not answer."""
    payload = json.dumps(value, separators=(",", ":")).encode()
    headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(revision)}
    try:
        ack = await js.publish(f"$KV.{bucket}.{key}", payload, timeout=timeout, headers=headers)
    except nats.js.errors.APIError as e:
        if e.err_code in _WRONG_LAST_SEQUENCE:
            raise Conflict(key) from e
        raise
    return int(ack.seq)
