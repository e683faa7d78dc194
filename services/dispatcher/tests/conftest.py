"""Fixtures for the dispatcher tests: a real gRPC transformer peer, the dispatcher running in-process,
a NATS client that submits like the ingest services do, and the EVENTS stream read back."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from postwire.core.bodies import BodyStore
from postwire.core.ids import new_message_id
from postwire.core.intake import Intake, Submission
from postwire.core.topology import Topology
from postwire.core.tracking import OPEN, placeholder
from postwire.dispatcher.service import serve
from postwire.dispatcher.settings import DispatcherSettings
from postwire.testing.dns import DnsServer
from postwire.testing.nats import NatsServer
from postwire.testing.ports import free_port
from postwire.testing.smtp import SmtpSink
from postwire.v1 import envelope_pb2, transformer_pb2, transformer_pb2_grpc

INLINE_MAX = 64 * 1024
VERP_SECRET = "dispatcher-tests-verp-secret-0123456789"
BOUNCE_DOMAIN = "bounces.postwire.test"
REJECT_MARKER = b"X-Test-Reject: yes"


class FakeInliner(transformer_pb2_grpc.TransformerServicer):
    """A real Transformer peer with a trivial transform: ``<p>`` → ``<p style="x">``. MIME carrying
    REJECT_MARKER gets INVALID_ARGUMENT, as unparseable MIME would from the real service. With tracking
    asked for, ``href="http…"`` values become placeholders (8bit test bodies need no QP care) and a pixel
    goes before ``</body>``: the contract of the real transformer (services/transformer)."""

    def __init__(self) -> None:
        self.calls = 0

    async def Transform(self, request: transformer_pb2.TransformRequest,
                        context: grpc.aio.ServicerContext) -> transformer_pb2.TransformResponse:
        response = self.transform(request)
        if response is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cannot parse MIME")
        return response

    async def TransformStream(self, requests: AsyncIterator[transformer_pb2.TransformStreamRequest],
                              context: grpc.aio.ServicerContext,
                              ) -> AsyncIterator[transformer_pb2.TransformStreamResponse]:
        """What the dispatcher uses: each stream message's items answered by id, a refusal in its answer."""
        refused = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        async for batch in requests:
            answers = []
            for item in batch.items:
                response = self.transform(item.request)
                answers.append(
                    transformer_pb2.TransformStreamAnswer(id=item.id, response=response) if response
                    else transformer_pb2.TransformStreamAnswer(id=item.id, code=refused,
                                                               details="cannot parse MIME"))
            yield transformer_pb2.TransformStreamResponse(answers=answers)

    def transform(self, request: transformer_pb2.TransformRequest,
                  ) -> transformer_pb2.TransformResponse | None:
        """The trivial transform; None for MIME carrying REJECT_MARKER."""
        self.calls += 1
        if REJECT_MARKER in request.mime:
            return None
        opts = request.options
        mime = request.mime.replace(b"<p>", b'<p style="x">') if opts.inline_css else request.mime
        links: list[str] = []

        def track(m: re.Match[bytes]) -> bytes:
            links.append(m.group(1).decode())
            url = opts.click_url_prefix + placeholder(opts.nonce, len(links) - 1)
            return b'href="' + url.encode() + b'"'

        if opts.track_clicks:
            mime = re.sub(rb'href="(https?://[^"]+)"', track, mime)
        pixel = opts.track_opens and b"</body>" in mime
        if pixel:
            img = f'<img src="{opts.open_url_prefix}{placeholder(opts.nonce, OPEN)}" width="1" height="1">'
            mime = mime.replace(b"</body>", img.encode() + b"</body>", 1)
        return transformer_pb2.TransformResponse(mime=mime, changed=mime != request.mime, links=links,
                                                 open_pixel=pixel,
                                                 html_parts_transformed=int(mime != request.mime))


class TransformerPeer:
    """Start/stop a grpc.aio Transformer on a fixed loopback port (it can come up after the dispatcher)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.servicer = FakeInliner()
        self._server: grpc.aio.Server | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = grpc.aio.server()
        transformer_pb2_grpc.add_TransformerServicer_to_server(self.servicer, self._server)
        self._server.add_insecure_port(self.addr)
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


@pytest_asyncio.fixture
async def transformer() -> AsyncIterator[TransformerPeer]:
    peer = TransformerPeer()
    await peer.start()
    yield peer
    await peer.stop()


@pytest_asyncio.fixture
async def transformer_down() -> AsyncIterator[TransformerPeer]:
    """A transformer address with nothing listening yet; the test starts it when it wants."""
    peer = TransformerPeer()
    yield peer
    await peer.stop()


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    await Topology().apply(client.jetstream())
    yield client
    await client.close()


@pytest_asyncio.fixture
async def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@dataclass
class EventLog:
    """Everything in the EVENTS stream (as stored: JetStream's dedupe applied), in order."""

    events: list[envelope_pb2.Event] = field(default_factory=list)

    def of(self, event_type: str, recipient: str | None = None) -> list[envelope_pb2.Event]:
        return [e for e in self.events
                if e.type == event_type and (recipient is None or e.recipient == recipient)]


@pytest_asyncio.fixture
async def events(js: JetStreamContext) -> AsyncIterator[EventLog]:
    log = EventLog()

    async def on_event(msg: Any) -> None:
        log.events.append(envelope_pb2.Event.FromString(msg.data))

    sub = await js.subscribe("events.>", ordered_consumer=True, cb=on_event)
    yield log
    await sub.unsubscribe()


Submit = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture
async def submit(js: JetStreamContext) -> Submit:
    """Queue a message on INBOUND exactly as ingest-smtp and api-gateway do (postwire.core.intake)."""
    intake = Intake(js, BodyStore(js, INLINE_MAX))

    async def submit_(recipients: list[str], raw: bytes, *, inline_css: bool = False,
                      mail_from: str = "sender@example.org", account_id: str = "acct1",
                      **options: Any) -> str:
        """``options``: further Submission fields (tracking switches, dsn, recipient_ids, …)."""
        mid = new_message_id()
        await intake.submit(Submission(account_id=account_id, mail_from=mail_from, recipients=recipients,
                                       raw=raw, source="api", subject="Hello", inline_css=inline_css,
                                       tags=["t1"], metadata={"k": "v"}, **options), mid)
        return mid

    return submit_


@dataclass
class RunningDispatcher:
    settings: DispatcherSettings
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), 30)


StartDispatcher = Callable[..., Awaitable[RunningDispatcher]]


@pytest_asyncio.fixture
async def start_dispatcher(nats_server: NatsServer, dns_server: DnsServer, smtp_sink: SmtpSink,
                           pg_url: str) -> AsyncIterator[StartDispatcher]:
    """Run ``serve()`` in-process against the test's NATS, DNS and SMTP sink; stopped at teardown."""
    running: list[RunningDispatcher] = []

    async def start(**overrides: Any) -> RunningDispatcher:
        values: dict[str, Any] = dict(
            nats_url=nats_server.url, dns_nameservers=dns_server.nameserver, mx_port=smtp_sink.port,
            transformer_addr="127.0.0.1:1", ehlo_hostname="dispatcher.test", inline_body_max=INLINE_MAX,
            ops_port=0, shards=4, retry_base_s=0.2, retry_max_s=1.0, transformer_retry_s=0.2,
            transformer_timeout_s=10, connect_timeout_s=5, command_timeout_s=30, ack_wait_s=30,
            connection_idle_s=30, shutdown_grace_s=5, dns_timeout_s=2,
            database_url=pg_url, verp_secret=VERP_SECRET, bounce_domain=BOUNCE_DOMAIN,
        )
        values.update(overrides)
        settings = DispatcherSettings(**values)
        stop = asyncio.Event()
        running.append(RunningDispatcher(settings, stop, asyncio.create_task(serve(settings, stop))))
        return running[-1]

    yield start
    for dispatcher in running:
        dispatcher.stop_event.set()
    for dispatcher in running:
        await dispatcher.stop()


@pytest.fixture
def domain() -> str:
    """A fresh domain per test: the DNS server lives for the whole session."""
    return f"d{uuid.uuid4().hex[:10]}.test"


def mime(body: str = "<p>Hello</p>", subject: str = "Hello", extra_headers: str = "") -> bytes:
    return (f"From: sender@example.org\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n{extra_headers}"
            f"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{body}\r\n").encode()


@pytest.fixture
def make_mime() -> Callable[..., bytes]:
    return mime
