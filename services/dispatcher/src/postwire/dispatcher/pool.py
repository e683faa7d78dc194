"""Connection reuse: open SMTP sessions kept per (MX host, port) and lent out one transaction at a time.

A burst to one domain then costs a handful of connections instead of one per message, which is what
receiving MTAs expect and what their throttles count. Each host gets at most ``max_per_host`` sessions
(callers wait for one to come back rather than open more), each session carries at most
``max_messages`` transactions (RSET between them, QUIT after the last), and a session idle for
``idle_s`` is closed with QUIT. Issue 3's shaping rules will supply these limits per provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from postwire.dispatcher.smtp_client import ClientConfig, ConnectFailure, SmtpConnection, TlsFailure

log = structlog.get_logger(__name__)


@dataclass
class _Host:
    """Sessions of one (MX host, port): the idle ones, and how many exist (idle, lent or opening)."""

    idle: list[SmtpConnection] = field(default_factory=list)
    count: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class ConnectionPool:
    def __init__(self, cfg: ClientConfig, *, max_per_host: int, max_messages: int, idle_s: float) -> None:
        self._cfg = cfg
        self._max_per_host = max_per_host
        self._max_messages = max_messages
        self._idle_s = idle_s
        self._hosts: dict[tuple[str, int], _Host] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle())

    @contextlib.asynccontextmanager
    async def lease(self, mx_host: str, port: int, addresses: list[str]) -> AsyncIterator[SmtpConnection]:
        """A session with ``mx_host`` (reused, or new across ``addresses`` in order); raises
        ConnectFailure when no address gives one. The session goes back to the pool afterwards."""
        host = self._hosts.setdefault((mx_host, port), _Host())
        conn = await self._acquire(host, mx_host, port, addresses)
        try:
            yield conn
        except BaseException:
            await self._discard(host, conn)  # interrupted mid-transaction: the session state is unknown
            raise
        await self._release(host, conn)

    async def _acquire(self, host: _Host, mx_host: str, port: int, addresses: list[str]) -> SmtpConnection:
        while True:
            reused = await self._take_idle_or_slot(host)
            if reused is None:
                break
            if await reused.reset():
                return reused
            await self._discard(host, reused)  # the server dropped it while idle: try another
        try:
            return await self._open(mx_host, port, addresses)
        except BaseException:
            async with host.changed:
                host.count -= 1
                host.changed.notify()
            raise

    async def _take_idle_or_slot(self, host: _Host) -> SmtpConnection | None:
        """An idle session (most recently used first), or None after reserving room for a new one."""
        async with host.changed:
            while True:
                while host.idle:
                    conn = host.idle.pop()
                    if conn.is_connected:
                        return conn
                    host.count -= 1
                    conn.close()
                if host.count < self._max_per_host:
                    host.count += 1
                    return None
                await host.changed.wait()

    async def _open(self, mx_host: str, port: int, addresses: list[str]) -> SmtpConnection:
        """Try each address in order; a failed STARTTLS handshake is retried once in plain text."""
        failure: ConnectFailure | None = None
        for address in addresses:
            try:
                return await SmtpConnection.open(mx_host, address, port, self._cfg)
            except TlsFailure as e:
                log.warning("smtp.tls_failed_retrying_plain", mx_host=mx_host, address=address, error=str(e))
                try:
                    return await SmtpConnection.open(mx_host, address, port, self._cfg, use_tls=False)
                except ConnectFailure as e2:
                    failure = e2
            except ConnectFailure as e:
                log.info("smtp.connect_failed", mx_host=mx_host, address=address, error=str(e))
                failure = e
        assert failure is not None, "no addresses to connect to"
        raise failure

    async def _release(self, host: _Host, conn: SmtpConnection) -> None:
        keep = (not self._closed and conn.healthy and conn.is_connected
                and conn.messages < self._max_messages)
        if keep:
            conn.last_used = time.monotonic()
            async with host.changed:
                host.idle.append(conn)
                host.changed.notify()
        else:
            await self._discard(host, conn)

    async def _discard(self, host: _Host, conn: SmtpConnection) -> None:
        async with host.changed:
            host.count -= 1
            host.changed.notify()
        self._quit_later(conn)

    def _quit_later(self, conn: SmtpConnection) -> None:
        """QUIT without making the caller (about to ack a message) wait for the server's goodbye."""
        task = asyncio.create_task(conn.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _reap_idle(self) -> None:
        interval = max(0.05, min(self._idle_s / 2, 5.0))
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self._idle_s
            for host in self._hosts.values():
                async with host.changed:
                    stale = [c for c in host.idle if c.last_used <= deadline or not c.is_connected]
                    host.idle = [c for c in host.idle if c not in stale]
                    host.count -= len(stale)
                    if stale:
                        host.changed.notify(len(stale))
                for conn in stale:
                    self._quit_later(conn)

    async def close(self) -> None:
        """QUIT every idle session; sessions still lent out are closed when they come back."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for host in self._hosts.values():
            async with host.changed:
                idle, host.idle = host.idle, []
                host.count -= len(idle)
            for conn in idle:
                self._quit_later(conn)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=10)
