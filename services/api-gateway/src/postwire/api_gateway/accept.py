"""Making a submission durable, shared by every sending route (/v1/messages, /v1/messages/mime,
/v1/send, /v1/resend).

:func:`accept`: reserve the Idempotency-Key (if any), build the message, make it durable with
:meth:`Intake.submit`, then answer. The answer is only ever written after the JetStream PubAck; NATS
trouble answers 503 and nothing is accepted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse

from postwire.api_gateway import metrics
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import ApiError, InvalidInput
from postwire.api_gateway.idempotency import IdempotencyStore, Replay, check_key
from postwire.api_gateway.ratelimit import SendQuota
from postwire.core.ids import new_message_id
from postwire.core.intake import QueueUnavailable, Submission
from postwire.core.sendoptions import OptionHeaders, take_option_headers
from postwire.db.sender_domains import PolicyUnavailable

log = structlog.get_logger(__name__)

# builds the submission for a message id (the reserved one when an Idempotency-Key is replayed)
Prepare = Callable[[str], Awaitable[Submission]]
# the answer's body for an accepted submission
Render = Callable[[str, Submission], dict[str, Any]]


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def check_recipient_count(n: int, limit: int) -> None:
    if n > limit:
        raise InvalidInput(("body",), f"{n} recipients; at most {limit} per message", "too_many_recipients")


def check_size(raw: bytes, limit: int) -> None:
    if len(raw) > limit:
        metrics.REJECTED.labels("too_large").inc()
        raise ApiError(413, "message_too_large", f"the message is {len(raw)} bytes; the limit is {limit}")


def check_no_nul(raw: bytes) -> None:
    """NUL is not allowed anywhere in a message (RFC 5322 section 2.3; ingest-smtp refuses it in DATA with
    550): from JSON (``"text": "a\\u0000b"``), a form or raw MIME, it is refused here the same way."""
    if b"\x00" in raw:
        raise InvalidInput(("body",), "NUL characters are not allowed in a message (RFC 5322 2.3)",
                           "nul_character")


def take_options(raw: bytes) -> tuple[bytes, OptionHeaders]:
    """``raw`` without its x-smtpeter-* / X-Postwire-* option headers, and what they asked for. The API
    refuses an unreadable one (SMTP, which cannot explain itself as well, ignores it)."""
    stripped, found = take_option_headers(raw)
    if found.problems:
        raise InvalidInput(("body",), "; ".join(found.problems), "invalid_option_header")
    return stripped, found


def apply_options(sub: Submission, found: OptionHeaders) -> Submission:
    """Header switches override the request's options; header tags are added to the request's."""
    for name, value in found.switches.items():
        setattr(sub, name, value)
    if found.tags:
        tags = list(sub.tags)
        sub.tags = tags + [t for t in found.tags if t not in tags]
    if found.stream is not None:
        sub.stream = found.stream
    if found.unsubscribe is not None:
        sub.unsubscribe = found.unsubscribe
    return sub


async def accept(deps: Deps, request: Request, account_id: str, key: str | None, endpoint: str,
                 request_hash: Callable[[], str], prepare: Prepare, render: Render,
                 status_code: int = 202) -> JSONResponse:
    """Prepare, check and queue one message; with an Idempotency-Key, once per key and request
    (``request_hash`` is called only then: canonicalising a JSON request is a tenth of its cost)."""
    store: IdempotencyStore = request.app.state.idempotency
    quota: SendQuota = request.app.state.send_quota
    message_id = new_message_id()
    if key is not None:
        reserved = await store.reserve(account_id, check_key(key), request_hash(), message_id)
        if isinstance(reserved, Replay):
            return JSONResponse(reserved.body, reserved.status_code, headers={"Idempotent-Replayed": "true"})
        message_id = reserved.message_id
    try:
        sub = await prepare(message_id)
        if sub.stream is None:  # not named by the request or a header: the API key's default, if any
            sub.stream = getattr(request.state, "key_stream", None)
        check_size(sub.raw, deps.settings.max_message_size)
        if sub.personalisation is None:  # a personalised message's parts were checked one by one
            check_no_nul(sub.raw)
        await check_from_domain(deps, sub)
        await quota.take(account_id, len(sub.recipients))  # 429 when the send quota is used up
    except Exception:  # invalid, too large, over quota, or a bug: nothing was sent, the key stays usable
        if key is not None:
            await store.forget(account_id, key)
        raise
    try:
        await submit(deps, sub, message_id, endpoint)
    except QueueUnavailable as e:
        quota.give_back(account_id, len(sub.recipients))  # not queued: it does not count
        if key is not None:
            await store.expire(account_id, key)
        metrics.REJECTED.labels("queue_unavailable").inc()
        log.warning("api.queue_unavailable", error=str(e), message_id=message_id)
        raise ApiError(503, "queue_unavailable", "the message queue is unavailable; nothing was accepted, "
                       "retry later", headers={"Retry-After": "5"}) from e
    except BaseException:
        quota.give_back(account_id, len(sub.recipients))
        raise
    answer = render(message_id, sub)
    if key is not None:
        await _remember(store, account_id, key, status_code, answer)
    log.debug("api.accepted", message_id=message_id, account_id=account_id, endpoint=endpoint,
             recipients=len(sub.recipients), size=len(sub.raw))
    return JSONResponse(answer, status_code)


async def check_from_domain(deps: Deps, sub: Submission) -> None:
    """422 for mail From a domain the account has not verified (docs/domains.md); 503 while the database
    cannot say which it has."""
    try:
        domain = await deps.from_policies.unverified(sub.account_id, sub.from_domains())
    except PolicyUnavailable as e:
        raise ApiError(503, "database_unavailable", "cannot check the From domain now; nothing was accepted, "
                       "retry later", headers={"Retry-After": "5"}) from e
    if domain is not None:
        metrics.REJECTED.labels("unverified_from").inc()
        raise ApiError(422, "unverified_from_domain",
                       f"{domain} is not a verified sending domain of this account: add it "
                       "(POST /v1/domains) and verify it (POST /v1/domains/{name}/verify), or send From one "
                       "that is")


async def submit(deps: Deps, sub: Submission, message_id: str, endpoint: str) -> None:
    """Fail fast while disconnected: an answer at once, and a clear one. (The connection buffers nothing
    while reconnecting, pending_size=0 in postwire.core.natsconn, so a publish then would fail anyway;
    with a buffer it could reach INBOUND after we answered 503.)"""
    if not deps.nc.is_connected:
        raise QueueUnavailable("not connected to NATS")
    start = time.perf_counter()
    await deps.intake.submit(sub, message_id)
    metrics.ACCEPT_SECONDS.labels(endpoint).observe(time.perf_counter() - start)
    metrics.ACCEPTED.labels(endpoint).inc()


async def _remember(store: IdempotencyStore, account_id: str, key: str, status_code: int,
                    answer: dict[str, Any]) -> None:
    """The message is accepted whatever happens here, so a database error must not turn the answer into
    an error: the reservation then stays pending and a retry after the lease re-publishes the same id."""
    try:
        await store.complete(account_id, key, status_code, answer)
    except Exception as e:
        log.error("api.idempotency_store_failed", error=str(e), account_id=account_id)
