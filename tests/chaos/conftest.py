"""The loopback MX the chaos tests deliver to: one per test, so every count starts at zero."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from postwire.testing.smtp import SmtpSink


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    srv = await SmtpSink().start()
    yield srv
    await srv.stop()
