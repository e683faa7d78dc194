"""The local run's sandbox: a catch-all MX that keeps every message it is sent, for the console's inbox.

``postwire run`` starts it (``python -m postwire.cli.sandbox``, supervised like the services) unless
``POSTWIRE_SANDBOX=false``, and points the dispatcher's relay host (POSTWIRE_RELAY_HOST) at it. So a
message to any address — a domain without DNS included — goes through the whole system (routing,
transformer, DKIM, VERP, the SMTP transaction) and ends up here, and the recorder hears ``delivered``
with this server as ``mx_host``.

An SMTP server (aiosmtpd on the process's own loop): any sender, any recipient, no AUTH, no TLS,
loopback only (it is an open sink: anyone who reaches it can fill the data dir up to the cap). A few
recipients act out an outcome instead (``SIMULATED``: ``bounce@``, ``full@``, ``blocked@``, ``defer@`` at
any domain), so the failure paths can be seen as easily as a delivery. Each
message is written to ``POSTWIRE_SANDBOX_DIR`` by ``postwire.core.sandbox_store`` (a file per message
plus its index entry; the newest ``POSTWIRE_SANDBOX_MAX_MESSAGES`` are kept) and answered 250 only
once it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import PositiveInt, field_validator

from postwire.core import sandbox_store
from postwire.core.lifecycle import run_service
from postwire.core.ops import ops_app, serve_app
from postwire.core.settings import PostwireSettings

log = structlog.get_logger(__name__)

HOOKS = ("handle_RCPT", "handle_DATA", "handle_exception")

TEMPORARY_ERROR = "451 4.3.0 Temporary local error, try again later"
NO_AUTH = "502 5.5.1 AUTH not available: the sandbox takes mail from anyone on this machine"
RCPT_OK = "250 2.1.5 OK"
# Recipients that act out an outcome instead of being caught, by local part (any domain, any +suffix), as
# hosted relays' simulators do: so a newcomer sees a bounce, a deferral and a full mailbox go through
# the classifier, the events, the suppressions and the console. Replies in the wording MTAs use.
SIMULATED: dict[str, str] = {
    "bounce": "550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table",
    "full": "552 5.2.2 <{address}>: Mailbox full, quota exceeded",
    "blocked": "554 5.7.1 Service unavailable; Client host blocked using sandbox.example (a simulated block)",
    "defer": "451 4.2.0 <{address}>: Temporarily unavailable, try again later (simulated)",
}
SIZE_SLACK = 1 << 20  # what signing and tracking may add to a message of POSTWIRE_MAX_MESSAGE_SIZE


class SandboxSettings(PostwireSettings):
    sandbox_smtp_host: str = "127.0.0.1"
    sandbox_smtp_port: int = 2527
    # where caught messages are kept; unset: <POSTWIRE_DATA_DIR>/sandbox
    sandbox_dir: Path | None = None
    sandbox_max_messages: PositiveInt = sandbox_store.DEFAULT_KEEP

    @field_validator("sandbox_smtp_host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        try:
            loopback = ipaddress.ip_address(value).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the sandbox listens on a loopback address only, not {value!r}")
        return value

    @property
    def folder(self) -> Path:
        return self.sandbox_dir if self.sandbox_dir is not None else self.data_dir / "sandbox"


def simulated_reply(address: str) -> str | None:
    """The reply a simulator address gets (``bounce@…``, ``bounce+1@…``, ``full@…``, ``blocked@…``,
    ``defer@…``); None for every other address, which is caught."""
    local = address.rpartition("@")[0].split("+", 1)[0].lower()
    template = SIMULATED.get(local)
    return template.format(address=address) if template is not None else None


class SandboxHandler:
    """Accepts every recipient; DATA is answered 250 once the message is stored."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep
        self.storing = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        simulated = simulated_reply(address)
        if simulated is not None:
            log.info("sandbox.simulated", recipient=address, reply=simulated[:3])
            return simulated
        envelope.rcpt_tos.append(address)
        return RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from  # the null sender: ""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
        self.storing += 1
        self.idle.clear()
        try:
            msg = await asyncio.to_thread(
                sandbox_store.store_message, self.folder, sender, list(envelope.rcpt_tos),
                data, keep=self.keep, helo=session.host_name or "", peer=peer)
        finally:
            self.storing -= 1
            if not self.storing:
                self.idle.set()
        log.info("sandbox.caught", id=msg.id, size=msg.size, recipients=len(msg.recipients))
        return f"250 2.0.0 Ok: caught as {msg.id}"

    async def handle_exception(self, error: Exception) -> str:
        """A failed write (disk full, folder gone) is temporary: the dispatcher retries the message."""
        log.error("sandbox.error", error=f"{type(error).__name__}: {error}")
        return TEMPORARY_ERROR


class SandboxSMTP(SMTP):
    """aiosmtpd's SMTP without AUTH, tracking its connections so shutdown can close them."""

    def __init__(self, handler: SandboxHandler, *, connections: set[SandboxSMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._connections = connections

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push(NO_AUTH)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        super().connection_lost(error)


class SandboxListener:
    def __init__(self, server: asyncio.Server, handler: SandboxHandler,
                 connections: set[SandboxSMTP]) -> None:
        self._server = server
        self.handler = handler
        self._connections = connections
        self.port = int(server.sockets[0].getsockname()[1])  # the bound port (port 0 picks one)

    @property
    def listening(self) -> bool:
        return self._server.is_serving()

    async def close(self, grace_s: float) -> None:
        """Stop accepting, let messages being written finish, then hang up. A transaction cut off was
        never answered 250: the dispatcher sends it again."""
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.handler.idle.wait(), grace_s)
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)


async def start_sandbox(folder: Path, *, host: str, port: int, keep: int,
                        max_message_size: int) -> SandboxListener:
    """Bind ``host:port`` (0 picks a free port) and serve the sandbox on the running loop. What an
    interrupted writer left in ``folder`` is removed first."""
    await asyncio.to_thread(sandbox_store.sweep, folder)
    handler = SandboxHandler(folder, keep)
    connections: set[SandboxSMTP] = set()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO

    def factory() -> SandboxSMTP:
        return SandboxSMTP(handler, connections=connections, hostname="sandbox.postwire.local",
                           ident="Postwire sandbox MX", data_size_limit=max_message_size + SIZE_SLACK,
                           decode_data=False, enable_SMTPUTF8=True)

    server = await asyncio.get_running_loop().create_server(factory, host, port)
    return SandboxListener(server, handler, connections)


async def serve(settings: SandboxSettings, stop: asyncio.Event) -> None:
    listener = await start_sandbox(settings.folder, host=settings.sandbox_smtp_host,
                                   port=settings.sandbox_smtp_port, keep=settings.sandbox_max_messages,
                                   max_message_size=settings.max_message_size)
    log.info("sandbox.listening", host=settings.sandbox_smtp_host, port=listener.port,
             folder=str(settings.folder), keep=settings.sandbox_max_messages)

    async def ready() -> bool:
        return listener.listening

    try:
        await serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop)
    finally:
        await listener.close(settings.shutdown_grace_s)
        log.info("sandbox.stopped")


def main() -> None:
    run_service("sandbox", SandboxSettings(), serve)


if __name__ == "__main__":
    main()
