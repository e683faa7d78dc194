"""Message bodies: small ones ride inside the NATS envelope, large ones go to the BODIES object store.

A stored body is written once under a name of its message (``<id>/original``, ``<id>/shared``, …) and
never changed, so a reader may keep what it read: the dispatcher's senders do (``cache_bytes``), since a
message to many recipients has its one body read for each of them.
"""

from __future__ import annotations

from collections import OrderedDict

from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from postwire.core.topology import BODIES
from postwire.v1 import envelope_pb2


class BodyStore:
    def __init__(self, js: JetStreamContext, inline_max: int, cache_bytes: int = 0) -> None:
        self._js = js
        self._inline_max = inline_max
        self._bucket: ObjectStore | None = None
        self._cache: OrderedDict[str, bytes] = OrderedDict()  # stored bodies read, newest last
        self._cache_max = cache_bytes
        self._cached = 0

    async def _store(self) -> ObjectStore:
        if self._bucket is None:
            self._bucket = await self._js.object_store(BODIES)
        return self._bucket

    async def put(self, name: str, data: bytes, inline_max: int | None = None) -> envelope_pb2.Body:
        """Store ``data`` (under ``name`` when larger than ``inline_max``, default the store's) and return
        the reference to put in an envelope."""
        if len(data) <= (self._inline_max if inline_max is None else inline_max):
            return envelope_pb2.Body(inline=data, size=len(data))
        await (await self._store()).put(name, data)
        return envelope_pb2.Body(object_name=name, size=len(data))

    async def get(self, body: envelope_pb2.Body) -> bytes:
        if body.WhichOneof("location") != "object_name":
            return body.inline
        name = body.object_name
        found = self._cache.get(name)
        if found is not None:
            self._cache.move_to_end(name)
            return found
        result = await (await self._store()).get(name)
        data = result.data or b""
        self._keep(name, data)
        return data

    def _keep(self, name: str, data: bytes) -> None:
        """Keep ``data`` when it is at most a quarter of the cache, dropping the least recently read."""
        if len(data) > self._cache_max // 4 or name in self._cache:
            return
        self._cache[name] = data
        self._cached += len(data)
        while self._cached > self._cache_max:
            self._cached -= len(self._cache.popitem(last=False)[1])

    async def delete(self, body: envelope_pb2.Body) -> None:
        if body.WhichOneof("location") == "object_name":
            if (gone := self._cache.pop(body.object_name, None)) is not None:
                self._cached -= len(gone)
            await (await self._store()).delete(body.object_name)
