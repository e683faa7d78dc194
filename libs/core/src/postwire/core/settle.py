"""Settling JetStream messages (ack, nak, term, in progress) so that a NATS failover cannot end a
consumer.

A settle is a plain publish to the message's reply subject. While the client reconnects after its
server died, every publish fails at once (``pending_size=0``, postwire.core.natsconn) and nats-py
raises; while the consumer's leader is being re-elected, the settle is dropped on the way. Either way
nothing is lost: a message that was not settled is handed out again after the consumer's ``ack_wait``,
and every consumer acks only after effects that are idempotent or carry stable ids (Nats-Msg-Id, event
ids), so the redelivery repeats them harmlessly. These helpers therefore log the failure and return
False instead of raising, so a consumer loop never ends because NATS could not be told. Misuse (a
second ack of one message, a message not from JetStream) is a bug and still raises.
"""

from __future__ import annotations

from collections.abc import Awaitable

import nats.errors
import structlog
from nats.aio.msg import Msg

log = structlog.get_logger(__name__)

# what a settle that did not reach NATS raises
UNREACHABLE: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, TimeoutError)
_MISUSE = (nats.errors.MsgAlreadyAckdError, nats.errors.NotJSMessageError)


async def ack(msg: Msg) -> bool:
    """Acknowledge ``msg``; False when it could not be sent (JetStream redelivers after ack_wait)."""
    return await _settle("ack", msg, msg.ack())


async def nak(msg: Msg, delay: float | None = None) -> bool:
    """Hand ``msg`` back for redelivery after ``delay``; False when it could not be sent (then it comes
    back after ack_wait instead)."""
    return await _settle("nak", msg, msg.nak(delay=delay))


async def give_back(msg: Msg, delay: float | None = None) -> bool:
    """After a failure part-way (an exception, a cancelled handler): nak ``msg`` unless it was settled
    already; False when nothing was sent."""
    if msg.is_acked:
        return False
    return await nak(msg, delay)


async def term(msg: Msg) -> bool:
    """Stop redelivering ``msg``; False when it could not be sent (it comes back to be refused again)."""
    return await _settle("term", msg, msg.term())


async def in_progress(msg: Msg) -> bool:
    """Restart ``msg``'s ack_wait; False when it could not be sent."""
    return await _settle("in_progress", msg, msg.in_progress())


async def _settle(op: str, msg: Msg, settling: Awaitable[None]) -> bool:
    try:
        await settling
    except _MISUSE:
        raise
    except UNREACHABLE as e:
        log.warning("nats.settle_failed", op=op, subject=msg.subject, error=str(e) or type(e).__name__)
        return False
    return True
