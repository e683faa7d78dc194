"""Client of the transformer's gRPC service (CSS inlining, tracking), one channel for the process.

Messages go over one long-lived ``TransformStream`` (:class:`TransformStream` below): a unary call's set-up
costs more CPU on both sides than carrying a 30 KB message, so each message is a request on the stream,
matched to its answer by id, and the requests made while a write is under way go out together as the next
stream message (gRPC costs about as much per stream message as per 30 KB carried). A transformer without the
stream (UNIMPLEMENTED) gets unary ``Transform`` calls instead; a stream that ends (the transformer stopping)
or breaks is replaced by a new one for the next message, and the requests it left unanswered are sent once
more on the new one (ended) or each once as a unary call (broken with another status than unavailable:
a broken stream says nothing of one message, its own answer does).

What a failure means for the message:
- UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNIMPLEMENTED: the transformer is down, overloaded or not
  the service we think it is → TransformerUnavailable; the router naks and retries later, because the
  customer asked for inlined CSS and will get it once the service is back.
- INVALID_ARGUMENT (MIME the transformer cannot parse), RESOURCE_EXHAUSTED (too large, or over one of the
  transformer's per-message limits: its time limit POSTWIRE_TRANSFORM_TIMEOUT_S, its memory limit, too many
  MIME parts or HTML tags) and anything else (a transformer bug on this one message) → None: deliver the
  original unchanged. Retrying would never succeed, and an un-inlined message beats an undelivered one.
  (The transformer answers a message that takes too long with RESOURCE_EXHAUSTED, not DEADLINE_EXCEEDED,
  for exactly this reason; our own deadline, POSTWIRE_TRANSFORMER_TIMEOUT_S, must stay above its limit.)

TLS: with POSTWIRE_TRANSFORMER_TLS_CA_FILE (and, for mTLS, POSTWIRE_TRANSFORMER_TLS_CERT_FILE/_KEY_FILE)
the channel is TLS, verified against that CA (POSTWIRE_TRANSFORMER_TLS_SERVER_NAME overrides the name
checked in the server's certificate, e.g. when the address is an IP). A TLS failure (wrong CA, no or
rejected client certificate) surfaces as UNAVAILABLE: retried later, which is right for a
misconfiguration that the operator fixes without losing mail. Unset: plaintext, as in the local run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import grpc
import structlog

from postwire.dispatcher import metrics
from postwire.dispatcher.settings import DispatcherSettings
from postwire.v1 import transformer_pb2, transformer_pb2_grpc

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
STREAM_WINDOW_BYTES = 8 * 1024 * 1024
# requests queued together go out as one stream message of about this much MIME at most
BATCH_BYTES = 1024 * 1024
_RETRY_LATER = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.UNIMPLEMENTED}
_ENGINES = {
    "": transformer_pb2.CSS_ENGINE_UNSPECIFIED,
    "css-inline": transformer_pb2.CSS_ENGINE_CSS_INLINE,
    "css_inline": transformer_pb2.CSS_ENGINE_CSS_INLINE,
    "premailer": transformer_pb2.CSS_ENGINE_PREMAILER,
}


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class TransformerUnavailable(Exception):
    """The transformer could not answer now; the message should wait and try again."""


class StreamClosed(Exception):
    """The stream ended or broke before answering; ``code`` is the stream's status (OK: the server
    ended it while stopping, UNIMPLEMENTED: a transformer without TransformStream, else broken)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class TransformStream:
    """One TransformStream call: requests queue until its writer sends all that are queued as one stream
    message (a batch shares gRPC's cost per stream message); answers come back in any order by id."""

    def __init__(self, stub: transformer_pb2_grpc.TransformerStub) -> None:
        self._call = stub.TransformStream()
        # every request not answered yet (queued or written); a request that gave up is not here
        self._pending: dict[int, asyncio.Future[transformer_pb2.TransformStreamAnswer]] = {}
        self._queue: deque[tuple[int, transformer_pb2.TransformRequest]] = deque()
        self._ids = itertools.count(1)
        self._closed: StreamClosed | None = None
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._writer: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self._closed is None

    async def request(self, request: transformer_pb2.TransformRequest,
                      timeout: float) -> transformer_pb2.TransformStreamAnswer:
        """The answer to ``request``; TimeoutError after ``timeout`` s, StreamClosed when the stream
        ends or breaks first."""
        if self._closed is not None:
            raise self._closed
        key = next(self._ids)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[transformer_pb2.TransformStreamAnswer] = loop.create_future()
        self._pending[key] = answer
        self._queue.append((key, request))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        try:
            async with asyncio.timeout(timeout):
                return await answer
        finally:
            self._pending.pop(key, None)  # the writer skips it if it is still queued
            if answer.done() and not answer.cancelled():
                answer.exception()  # seen: the stream closed after the wait had already ended
            else:
                answer.cancel()

    async def _write(self) -> None:
        """Send what is queued, in batches of about BATCH_BYTES, until nothing is; the stream's only
        writer (gRPC allows one write at a time). A failed write fails every request not answered."""
        while self._queue:
            items: list[transformer_pb2.TransformStreamItem] = []
            size = 0
            while self._queue and size < BATCH_BYTES:
                key, request = self._queue.popleft()
                if key in self._pending:
                    items.append(transformer_pb2.TransformStreamItem(id=key, request=request))
                    size += len(request.mime)
            if not items:
                continue
            try:
                await self._call.write(transformer_pb2.TransformStreamRequest(items=items))
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as e:
                self._close(await self._failure(e))
                return

    async def _failure(self, error: Exception) -> StreamClosed:
        """Why writing failed: the stream's status once the reader has seen it end."""
        await asyncio.wait((self._reader,), timeout=1.0)
        return self._closed or StreamClosed(grpc.StatusCode.UNAVAILABLE, repr(error))

    async def _read(self) -> None:
        try:
            async for batch in self._call:
                for answer in batch.answers:
                    waiting = self._pending.get(answer.id)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(answer)
            closed = StreamClosed(grpc.StatusCode.OK, "the transformer ended the stream")
        except grpc.aio.AioRpcError as e:
            closed = StreamClosed(e.code(), e.details() or "")
        except asyncio.CancelledError:
            closed = StreamClosed(grpc.StatusCode.CANCELLED, "the stream was closed")
        self._close(closed)

    def _close(self, closed: StreamClosed) -> None:
        """The stream is over: every request still waiting fails with ``closed``."""
        if self._closed is None:
            self._closed = closed
        self._queue.clear()
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(self._closed)

    def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        if self._writer is not None:
            self._writer.cancel()


def css_engine(name: str) -> transformer_pb2.CssEngine.ValueType:
    """The envelope's engine name → the proto enum; unknown names get the server's default."""
    return _ENGINES.get(name.strip().lower(), transformer_pb2.CSS_ENGINE_UNSPECIFIED)


@dataclass(frozen=True)
class TransformerTls:
    """TLS of the channel to the transformer: the CA that signed its certificate (None: the system's
    roots), this client's certificate and key for mTLS (both or neither), and the name to check in the
    server's certificate instead of the address's host."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("the transformer client certificate and key go together "
                             "(POSTWIRE_TRANSFORMER_TLS_CERT_FILE and POSTWIRE_TRANSFORMER_TLS_KEY_FILE)")

    @classmethod
    def from_settings(cls, settings: DispatcherSettings) -> Self | None:
        """From POSTWIRE_TRANSFORMER_TLS_*; None (plaintext) when none of the files is set."""
        if not (settings.transformer_tls_ca_file or settings.transformer_tls_cert_file):
            return None
        return cls(settings.transformer_tls_ca_file, settings.transformer_tls_cert_file,
                   settings.transformer_tls_key_file, settings.transformer_tls_server_name or None)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return None if path is None else path.read_bytes()

        return grpc.ssl_channel_credentials(root_certificates=read(self.ca_file),
                                            private_key=read(self.key_file),
                                            certificate_chain=read(self.cert_file))


class TransformerClient:
    def __init__(self, addr: str, timeout_s: float, tls: TransformerTls | None = None) -> None:
        self._timeout = timeout_s
        options: list[tuple[str, str | int]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # one stream carries every message: let it have many in flight, not HTTP/2's 64 KB
            ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
            # notice a restarted transformer within seconds, not gRPC's default two minutes
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if tls is None:
            self._channel = grpc.aio.insecure_channel(addr, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.aio.secure_channel(addr, tls.credentials(), options=options)
        self._stub = transformer_pb2_grpc.TransformerStub(self._channel)
        self._stream: TransformStream | None = None
        self._unary_only = False  # the transformer has no TransformStream

    @classmethod
    def from_settings(cls, settings: DispatcherSettings) -> TransformerClient:
        """The client the settings describe: address, deadline and TLS (POSTWIRE_TRANSFORMER_*)."""
        return cls(settings.transformer_addr, settings.transformer_timeout_s,
                   TransformerTls.from_settings(settings))

    async def inline_css(self, mime: bytes, engine: str) -> transformer_pb2.TransformResponse | None:
        """The message with its CSS inlined, or None when the original should be sent as it is."""
        return await self.transform(mime, transformer_pb2.TransformOptions(inline_css=True,
                                                                           css_engine=css_engine(engine)))

    async def transform(self, mime: bytes, options: transformer_pb2.TransformOptions,
                        ) -> transformer_pb2.TransformResponse | None:
        """The transformed message (CSS inlined and/or links rewritten for tracking), or None when the
        original should be sent as it is."""
        request = transformer_pb2.TransformRequest(mime=mime, options=options)
        if self._unary_only:
            return await self._unary(request)
        try:
            try:
                answer = await self._on_stream(request)
            except StreamClosed as e:
                if e.code is not grpc.StatusCode.OK:
                    raise
                answer = await self._on_stream(request)  # the transformer stopped: once more, on a new one
        except TimeoutError:
            return self._failed(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {self._timeout:g} s")
        except StreamClosed as e:
            if e.code is grpc.StatusCode.UNIMPLEMENTED:
                log.info("transformer.no_stream_using_unary_calls")
                self._unary_only = True
                return await self._unary(request)
            if e.code not in _RETRY_LATER:
                # the stream broke (INTERNAL, UNKNOWN…): that says nothing of this message, so ask for it
                # alone, and its own answer decides (a message that breaks the transformer is refused)
                log.warning("transformer.stream_broke_asking_alone", code=e.code.name, details=str(e))
                return await self._unary(request)
            return self._failed(e.code, str(e))
        if answer.code:
            return self._failed(_CODES.get(answer.code, grpc.StatusCode.UNKNOWN), answer.details)
        return self._succeeded(answer.response)

    async def _on_stream(self, request: transformer_pb2.TransformRequest,
                         ) -> transformer_pb2.TransformStreamAnswer:
        if self._stream is None or not self._stream.open:
            self._stream = TransformStream(self._stub)
        return await self._stream.request(request, self._timeout)

    async def _unary(self, request: transformer_pb2.TransformRequest,
                     ) -> transformer_pb2.TransformResponse | None:
        try:
            response: transformer_pb2.TransformResponse = await self._stub.Transform(request,
                                                                                     timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            return self._failed(e.code(), e.details() or "")
        return self._succeeded(response)

    @staticmethod
    def _failed(code: grpc.StatusCode, details: str) -> None:
        """None (send the original) for a refusal of this message; TransformerUnavailable to retry later."""
        if code in _RETRY_LATER:
            metrics.TRANSFORMER_CALLS.labels("unavailable").inc()
            raise TransformerUnavailable(f"{code.name}: {details}")
        metrics.TRANSFORMER_CALLS.labels("rejected").inc()
        log.warning("transformer.rejected_sending_original", code=code.name, details=details)
        return None

    @staticmethod
    def _succeeded(response: transformer_pb2.TransformResponse) -> transformer_pb2.TransformResponse:
        metrics.TRANSFORMER_CALLS.labels("changed" if response.changed else "unchanged").inc()
        return response

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        await self._channel.close()
