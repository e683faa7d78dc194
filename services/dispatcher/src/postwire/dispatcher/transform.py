"""Client of the transformer's gRPC ``Transform`` (CSS inlining), one channel for the process.

What a failure means for the message:
- UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNIMPLEMENTED: the transformer is down, overloaded or not
  the service we think it is → TransformerUnavailable; the router naks and retries later, because the
  customer asked for inlined CSS and will get it once the service is back.
- INVALID_ARGUMENT (MIME the transformer cannot parse), RESOURCE_EXHAUSTED (too large) and anything else
  (a transformer bug on this one message) → None: deliver the original unchanged. Retrying would never
  succeed, and an un-inlined message beats an undelivered one.
"""

from __future__ import annotations

import grpc
import structlog

from postwire.dispatcher import metrics
from postwire.v1 import transformer_pb2, transformer_pb2_grpc

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_RETRY_LATER = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.UNIMPLEMENTED}
_ENGINES = {
    "": transformer_pb2.CSS_ENGINE_UNSPECIFIED,
    "css-inline": transformer_pb2.CSS_ENGINE_CSS_INLINE,
    "css_inline": transformer_pb2.CSS_ENGINE_CSS_INLINE,
    "premailer": transformer_pb2.CSS_ENGINE_PREMAILER,
}


class TransformerUnavailable(Exception):
    """The transformer could not answer now; the message should wait and try again."""


def css_engine(name: str) -> transformer_pb2.CssEngine.ValueType:
    """The envelope's engine name → the proto enum; unknown names get the server's default."""
    return _ENGINES.get(name.strip().lower(), transformer_pb2.CSS_ENGINE_UNSPECIFIED)


class TransformerClient:
    def __init__(self, addr: str, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._channel = grpc.aio.insecure_channel(addr, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # notice a restarted transformer within seconds, not gRPC's default two minutes
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ])
        self._stub = transformer_pb2_grpc.TransformerStub(self._channel)

    async def inline_css(self, mime: bytes, engine: str) -> transformer_pb2.TransformResponse | None:
        """The message with its CSS inlined, or None when the original should be sent as it is."""
        return await self.transform(mime, transformer_pb2.TransformOptions(inline_css=True,
                                                                           css_engine=css_engine(engine)))

    async def transform(self, mime: bytes, options: transformer_pb2.TransformOptions,
                        ) -> transformer_pb2.TransformResponse | None:
        """The transformed message (CSS inlined and/or links rewritten for tracking), or None when the
        original should be sent as it is."""
        request = transformer_pb2.TransformRequest(mime=mime, options=options)
        try:
            response: transformer_pb2.TransformResponse = await self._stub.Transform(request,
                                                                                     timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() in _RETRY_LATER:
                metrics.TRANSFORMER_CALLS.labels("unavailable").inc()
                raise TransformerUnavailable(f"{e.code().name}: {e.details()}") from e
            metrics.TRANSFORMER_CALLS.labels("rejected").inc()
            log.warning("transformer.rejected_sending_original", code=e.code().name, details=e.details())
            return None
        metrics.TRANSFORMER_CALLS.labels("changed" if response.changed else "unchanged").inc()
        return response

    async def close(self) -> None:
        await self._channel.close()
