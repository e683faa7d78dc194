"""Wiring: NATS, topology, database, TLS, the ops endpoint, the shared per-client limits and the SMTP
listener, with graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from nats.aio.client import Client
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core import natsconn
from postwire.core.bodies import BodyStore
from postwire.core.intake import Intake
from postwire.core.jetstream import jetstream
from postwire.core.ops import ops_app, serve_app
from postwire.core.sharedlimits import LimitStore
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Account
from postwire.db.sender_domains import FromPolicies
from postwire.ingest_smtp.auth import LoginVerifier, database_check
from postwire.ingest_smtp.handler import RelayPolicy, SubmissionHandler
from postwire.ingest_smtp.limits import ClientLimits, Exempt
from postwire.ingest_smtp.listener import SmtpListener, start_listener
from postwire.ingest_smtp.server import SessionRules, quiet_aiosmtpd_log
from postwire.ingest_smtp.settings import IngestSmtpSettings
from postwire.ingest_smtp.tls import load_context

log = structlog.get_logger(__name__)


async def resolve_account(sessions: async_sessionmaker[AsyncSession], ref: str) -> str:
    """POSTWIRE_TRUSTED_ACCOUNT may be an account id or a name; fail at boot if it is neither."""
    async with sessions() as session:
        account = await session.get(Account, ref)
        if account is None:
            account = (await session.execute(select(Account).where(Account.name == ref))).scalar_one_or_none()
    if account is None:
        raise LookupError(f"POSTWIRE_TRUSTED_ACCOUNT={ref!r} is neither an account id nor an account name")
    return account.id


class _Readiness:
    """/readyz: listening and connected to NATS (without NATS every DATA would get 451)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.nc: Client | None = None
        self.listening = False

    async def __call__(self) -> bool:
        return self.listening and self.nc is not None and self.nc.is_connected and not self.stop.is_set()


async def serve(settings: IngestSmtpSettings, stop: asyncio.Event,
                started: Callable[[int], None] | None = None) -> None:
    """Run the submission server until ``stop`` is set, then drain. ``started`` gets the bound SMTP port.

    The ops endpoint comes up first, so liveness answers while we wait for NATS or the database.
    """
    quiet_aiosmtpd_log()
    ready = _Readiness(stop)
    ops_stop = asyncio.Event()
    ops = asyncio.create_task(serve_app(ops_app(ready), settings.ops_host, settings.ops_port, ops_stop))
    try:
        ready.nc = await natsconn.connect(settings.nats_url, "ingest-smtp", stop=stop)
        try:
            await _serve_with_nats(settings, stop, ready, started)
        finally:
            await ready.nc.close()
    finally:
        ops_stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await ops


async def _serve_with_nats(settings: IngestSmtpSettings, stop: asyncio.Event, ready: _Readiness,
                           started: Callable[[int], None] | None) -> None:
    assert ready.nc is not None
    nc = ready.nc
    js = jetstream(nc)
    await Topology.from_settings(settings).apply(js)
    engine = make_engine(settings.database_url)
    store = LimitStore(js, nc, "ingest-smtp")
    await store.start()
    drained = asyncio.Event()  # the limits' loop outlives the sessions: it gives their leases back last
    limits_loop = asyncio.create_task(store.run(drained))
    try:
        sessions = make_sessionmaker(engine)
        intake = Intake(js, BodyStore(js, settings.inline_body_max))
        listeners = await _start(settings, sessions, intake, nc, store)
        ready.listening = True
        for listener in listeners:
            log.info("smtp.listening", host=settings.smtp_host, port=listener.port)
        if started is not None:
            started(listeners[0].port)
        await stop.wait()
        ready.listening = False
        await asyncio.gather(*(listener.drain(settings.shutdown_grace_s) for listener in listeners))
        log.info("smtp.stopped")
    finally:
        drained.set()
        await limits_loop
        await engine.dispose()


async def _start(settings: IngestSmtpSettings, sessions: async_sessionmaker[AsyncSession], intake: Intake,
                 nc: Client, store: LimitStore) -> list[SmtpListener]:
    """The submission listener (STARTTLS), and the implicit-TLS one when POSTWIRE_SMTPS_PORT is set."""
    trusted_id = None
    if settings.trusted_networks:
        trusted_id = await resolve_account(sessions, settings.trusted_account)
    policy = RelayPolicy(tuple(settings.trusted_networks), trusted_id)
    handler = SubmissionHandler(intake=intake, policy=policy, hostname=settings.smtp_hostname,
                                max_recipients=settings.max_recipients,
                                max_header_size=settings.smtp_max_header_size,
                                queue_connected=lambda: nc.is_connected,
                                unverified_from=FromPolicies(sessions, settings.from_policy_ttl_s).unverified)
    tls_context = await asyncio.to_thread(load_context, settings.tls_cert_file, settings.tls_key_file,
                                          settings.data_dir, settings.smtp_hostname)
    verifier = LoginVerifier(database_check(sessions), settings.smtp_auth_cache_ttl_s)
    limits = client_limits(settings, store)  # one set per process, shared by both ports (and replicas)
    rules = SessionRules(data_timeout_s=settings.smtp_data_timeout_s, max_errors=settings.smtp_max_errors,
                         greet_pause_s=settings.smtp_greet_pause_s)
    ports = [(settings.smtp_port, False)] + ([(settings.smtps_port, True)] if settings.smtps_port else [])
    return [await start_listener(
        host=settings.smtp_host, port=port, handler=handler, verifier=verifier, tls_context=tls_context,
        hostname=settings.smtp_hostname, max_message_size=settings.max_message_size,
        allow_insecure_auth=settings.smtp_allow_insecure_auth, timeout_s=settings.smtp_timeout_s,
        limits=limits, rules=rules, implicit_tls=implicit,
    ) for port, implicit in ports]


def client_limits(settings: IngestSmtpSettings, store: LimitStore | None = None) -> ClientLimits:
    """Per-IP and per-login limits; the trusted networks are exempt from the per-IP ones too."""
    return ClientLimits.build(
        store=store,
        exempt=Exempt.of(settings.smtp_limit_exempt_networks, settings.trusted_networks),
        max_open=settings.smtp_max_connections_per_ip, per_minute=settings.smtp_connection_rate_per_ip,
        auth_per_ip=settings.smtp_auth_failures_per_ip, auth_per_user=settings.smtp_auth_failures_per_user,
        auth_window_s=settings.smtp_auth_failure_window_s, lockout_s=settings.smtp_auth_lockout_s,
    )
