"""The SUPPRESSIONS KV mirror against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client

from postwire.core.jetstream import jetstream
from postwire.core.topology import Topology
from postwire.db.suppressions import SuppressionInfo, SuppressionMirror
from postwire.testing.nats import NatsServer


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.mark.parametrize("pipelined", [True, False])
async def test_the_mirror_reads_the_same_through_a_direct_get(nc: Client, pipelined: bool) -> None:
    """The router reads suppressions with a direct get on the shared reply subscription; what it finds
    (an entry, none, a deleted one, an expired one) is what nats-py's KeyValue.get finds."""
    await Topology().apply(nc.jetstream())
    mirror = SuppressionMirror(jetstream(nc) if pipelined else nc.jetstream())
    now = datetime.now(UTC)
    await mirror.put(SuppressionInfo("acct", "gone@example.org", "userunknown", "bounce", None, now, None))
    await mirror.put(SuppressionInfo("acct", "old@example.org", "filtered", "bounce", None, now,
                                     now - timedelta(days=1)))
    await mirror.put(SuppressionInfo("acct", "back@example.org", "filtered", "manual", None, now, None))
    await mirror.delete("acct", "back@example.org")
    found = await mirror.lookup_many("acct", ["gone@example.org", "Gone@Example.org", "old@example.org",
                                              "back@example.org", "never@example.org"])
    assert {a: e.reason for a, e in found.items()} == {"gone@example.org": "userunknown",
                                                      "Gone@Example.org": "userunknown"}
    assert await mirror.lookup("other-account", "gone@example.org") is None
