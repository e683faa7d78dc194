"""JetStream publishes whose acknowledgements come back on one reply subscription of our own.

nats-py's ``JetStreamContext.publish`` is a request: every publish draws a fresh random token from the
operating system (``secrets.token_hex``: a getrandom system call), builds a new inbox name, and waits
under ``asyncio.wait_for``. A relay publishes several times per message (the message, its events, its
per-recipient copies), and in the dispatcher those requests cost about a tenth of the process's CPU.
:class:`PipelinedJetStream` keeps the same call and the same guarantees — ``publish`` returns only
once the stream has stored the message and raises what nats-py raises when it did not (a timeout, no
stream for the subject, a JetStream API error) — but matches acknowledgements to publishes by a counter
on one subscription made once per connection, and ``publish_many`` sends a batch in one write and waits
for all of it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

NO_RESPONDERS = "503"  # the status the server answers with when no stream listens on the subject


class PipelinedJetStream(JetStreamContext):
    """A JetStreamContext whose ``publish`` matches PubAcks on its own reply subscription."""

    def __init__(self, conn: Client, timeout: float = 5.0) -> None:
        super().__init__(conn, timeout=timeout)
        self._reply_prefix = ""  # not _prefix: JetStreamContext keeps its API prefix there
        self._replies_ready: asyncio.Future[None] | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}

    async def publish(self, subject: str, payload: bytes = b"", timeout: float | None = None,
                      stream: str | None = None, headers: dict[str, Any] | None = None,
                      msg_ttl: float | None = None) -> api.PubAck:
        """Store ``payload`` on ``subject``; returns the PubAck (raises as nats-py's publish does)."""
        if stream is not None or msg_ttl is not None:  # options we never use: nats-py's own path
            return await super().publish(subject, payload, timeout, stream, headers, msg_ttl)
        [acked] = await self.publish_many([(subject, payload, headers)], timeout)
        return acked

    async def publish_many(self, messages: Sequence[tuple[str, bytes, dict[str, Any] | None]],
                           timeout: float | None = None) -> list[api.PubAck]:
        """Publish every ``(subject, payload, headers)`` in one write, then wait until all are stored.
        Raises the first failure; the others may or may not be stored (publish again with the same
        Nats-Msg-Id: the stream deduplicates)."""
        replies = await self._requests(messages, timeout)
        return [_pub_ack(reply) for reply in replies]

    async def ack_confirmed(self, msg: Msg, timeout: float | None = None) -> None:
        """Acknowledge ``msg`` and wait until the server has processed the ack (nats-py's ack_sync, on
        the shared reply subscription)."""
        if not msg.reply:
            raise nats.errors.NotJSMessageError
        await self._requests([(msg.reply, b"", None)], timeout)  # an empty payload is +ACK

    async def direct_get_last(self, stream: str, subject: str, timeout: float | None = None) -> Msg | None:
        """The last message on ``subject`` of ``stream`` (a stream with allow_direct, as KV buckets are),
        read by a direct get answered on the shared reply subscription; None when there is none."""
        [reply] = await self._requests([(f"{self._prefix}.DIRECT.GET.{stream}.{subject}", b"", None)],
                                        timeout)
        status = reply.headers.get(api.Header.STATUS) if reply.headers else None
        if status == "404":
            return None
        if status is not None:
            why = reply.headers.get(api.Header.DESCRIPTION, "") if reply.headers else ""
            raise nats.errors.Error(f"direct get of {subject} in {stream}: status {status} {why}")
        return reply

    async def _requests(self, messages: Sequence[tuple[str, bytes, dict[str, Any] | None]],
                        timeout: float | None) -> list[Msg]:
        """Send every message with a reply subject of ours in one write; the replies, in order. The
        deadline is one timer that fails what is still waiting (``asyncio.timeout`` costs five times as
        much, and every message makes several of these calls)."""
        await self._ensure_replies()
        loop = asyncio.get_running_loop()
        tokens = []
        futures: list[asyncio.Future[Msg]] = []
        deadline = loop.call_later(self._timeout if timeout is None else timeout, _expire, futures)
        try:
            for subject, payload, headers in messages:
                token = str(next(self._tokens))
                self._waiting[token] = future = loop.create_future()
                tokens.append(token)
                futures.append(future)
                await self._nc.publish(subject, payload, reply=self._reply_prefix + token, headers=headers)
            return [await future for future in futures]
        except TimeoutError:
            raise nats.errors.TimeoutError from None
        finally:
            deadline.cancel()
            for token, future in zip(tokens, futures, strict=True):
                self._waiting.pop(token, None)
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # read: a deadline that passed during a publish that failed

    async def _ensure_replies(self) -> None:
        """Subscribe to the reply subject once (nats-py renews the subscription after a reconnect)."""
        if self._replies_ready is None:
            self._replies_ready = asyncio.get_running_loop().create_future()
            try:
                inbox = self._nc.new_inbox()
                await self._nc.subscribe(f"{inbox}.*", cb=self._on_reply)
            except BaseException as e:
                self._replies_ready.set_exception(e)
                self._replies_ready.exception()  # retrieved: the next caller tries again
                self._replies_ready = None
                raise
            self._reply_prefix = f"{inbox}."
            self._replies_ready.set_result(None)
        await self._replies_ready

    async def _on_reply(self, msg: Msg) -> None:
        waiter = self._waiting.get(msg.subject[len(self._reply_prefix):])
        if waiter is not None and not waiter.done():  # else: timed out already
            waiter.set_result(msg)


def _expire(futures: Sequence[asyncio.Future[Msg]]) -> None:
    """The deadline of a batch of requests: every reply not in yet times out."""
    for future in futures:
        if not future.done():
            future.set_exception(TimeoutError())


def _pub_ack(reply: Msg) -> api.PubAck:
    """The PubAck in ``reply``, or the error nats-py's publish would raise for it."""
    if reply.headers and reply.headers.get(api.Header.STATUS) == NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError()
    try:
        resp = json.loads(reply.data)
    except ValueError as e:
        raise nats.errors.Error(f"unreadable PubAck: {e}") from e
    if "error" in resp:
        nats.js.errors.APIError.from_error(resp["error"])  # raises the error's own class
    return api.PubAck(stream=resp.get("stream", ""), seq=resp.get("seq", 0), domain=resp.get("domain"),
                      duplicate=resp.get("duplicate"))


def jetstream(nc: Client, timeout: float = 5.0) -> PipelinedJetStream:
    """The JetStream context every service publishes with."""
    return PipelinedJetStream(nc, timeout=timeout)
