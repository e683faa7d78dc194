"""Message bodies: small ones ride inside the NATS envelope, large ones go to the BODIES object store."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from postwire.core.topology import BODIES
from postwire.v1 import envelope_pb2


class BodyStore:
    def __init__(self, js: JetStreamContext, inline_max: int) -> None:
        self._js = js
        self._inline_max = inline_max
        self._bucket: ObjectStore | None = None

    async def _store(self) -> ObjectStore:
        if self._bucket is None:
            self._bucket = await self._js.object_store(BODIES)
        return self._bucket

    async def put(self, name: str, data: bytes) -> envelope_pb2.Body:
        """Store ``data`` (under ``name`` when large) and return the reference to put in an envelope."""
        if len(data) <= self._inline_max:
            return envelope_pb2.Body(inline=data, size=len(data))
        await (await self._store()).put(name, data)
        return envelope_pb2.Body(object_name=name, size=len(data))

    async def get(self, body: envelope_pb2.Body) -> bytes:
        if body.WhichOneof("location") == "object_name":
            result = await (await self._store()).get(body.object_name)
            return result.data or b""
        return body.inline

    async def delete(self, body: envelope_pb2.Body) -> None:
        if body.WhichOneof("location") == "object_name":
            await (await self._store()).delete(body.object_name)
