"""The whole system as `make run` starts it (`postwire run` in a subprocess), pointed at a loopback
DNS server and SMTP destination. End-to-end tests and benchmarks use it.

The local run's sandbox (every message delivered to its own catch-all MX) is off here unless asked for
(``sandbox=True``): the tests and benchmarks deliver through DNS to their own destinations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from postwire.testing.ports import free_block, free_ports

SERVICE_COUNT = 8  # the processes with an ops port: the seven services and the sandbox


@dataclass
class LocalStack:
    data_dir: Path
    dns_nameserver: str  # "" (with mx_port 0): the run's own DNS and port 25, as `make run` has them
    mx_port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    # set (one URL or a cluster's comma-separated URLs): the run uses this NATS, not an embedded one
    nats_external_url: str = ""
    host: str = "127.0.0.1"
    # the venv whose `postwire` runs the stack (bin folder); default: this interpreter's
    bin_dir: Path | None = None
    # the local run's sandbox MX as the dispatcher's relay host (POSTWIRE_SANDBOX), caught mail in
    # sandbox_dir
    sandbox: bool = False
    proc: asyncio.subprocess.Process | None = None

    def __post_init__(self) -> None:
        ports = free_ports(7)
        self.nats_port, self.smtp_port, self.http_port = ports[:3]
        self.grpc_port, self.bounce_port, self.smtps_port, self.sandbox_port = ports[3:]
        self.ops_base_port = free_block(SERVICE_COUNT, avoid=set(ports))

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def nats_url(self) -> str:
        return self.nats_external_url or f"nats://{self.host}:{self.nats_port}"

    @property
    def sandbox_dir(self) -> Path:
        return self.data_dir / "sandbox"

    def env(self) -> dict[str, str]:
        delivery = {"POSTWIRE_SANDBOX": str(self.sandbox).lower(),
                    "POSTWIRE_SANDBOX_SMTP_PORT": str(self.sandbox_port)}
        if self.dns_nameserver:
            delivery["POSTWIRE_DNS_NAMESERVERS"] = self.dns_nameserver
        if self.mx_port:
            delivery["POSTWIRE_MX_PORT"] = str(self.mx_port)
        return {
            **os.environ,
            "POSTWIRE_DATA_DIR": str(self.data_dir), "POSTWIRE_NATS_PORT": str(self.nats_port),
            "POSTWIRE_SMTP_PORT": str(self.smtp_port), "POSTWIRE_HTTP_PORT": str(self.http_port),
            "POSTWIRE_GRPC_PORT": str(self.grpc_port),
            "POSTWIRE_BOUNCE_SMTP_PORT": str(self.bounce_port), "POSTWIRE_SMTPS_PORT": str(self.smtps_port),
            "POSTWIRE_OPS_BASE_PORT": str(self.ops_base_port), **delivery,
            "POSTWIRE_LOG_LEVEL": "INFO", "POSTWIRE_NATS_EXTERNAL_URL": self.nats_external_url,
            **self.extra_env,
        }

    def demo(self) -> dict[str, str]:
        creds: dict[str, str] = json.loads((self.data_dir / "demo-account.json").read_text())
        return creds

    async def start(self, timeout: float = 120) -> LocalStack:
        postwire = (self.bin_dir or Path(sys.executable).parent) / "postwire"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "run.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            str(postwire), "run", env=self.env(), stdout=log, stderr=log,
        )
        log.close()
        await self._wait_ready(timeout)
        return self

    async def _wait_ready(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        waiting_for = "nothing checked yet"
        async with httpx.AsyncClient() as client:
            while asyncio.get_running_loop().time() < deadline:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise RuntimeError(f"postwire run exited\n{self._log_tails()}")
                waiting_for = await self._not_ready(client)
                if not waiting_for:
                    return
                await asyncio.sleep(0.3)
        raise RuntimeError(f"stack not ready in {timeout}s: {waiting_for}\n{self._log_tails()}")

    def _log_tails(self, lines: int = 15) -> str:
        """The end of each log of this run: a CI failure shows why, not just where the logs were."""
        logs = [self.data_dir / "run.log", *sorted((self.data_dir / "logs").glob("*.log"))]
        parts = []
        for path in logs:
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(parts)

    async def ready(self) -> bool:
        """Every service answers (the API, the ops ports, SMTP)."""
        async with httpx.AsyncClient() as client:
            return not await self._not_ready(client)

    def processes(self, component: str) -> list[psutil.Process]:
        """The live processes of one component of this run: a service by name (``dispatcher``,
        ``ingest-smtp``, …), ``sandbox`` or ``nats`` (the embedded nats-server)."""
        assert self.proc is not None
        needle = ("nats-server" if component == "nats" else "postwire.cli.sandbox" if component == "sandbox"
                  else f"postwire.{component.replace('-', '_')}")
        found = []
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmdline = child.cmdline()
                if any(needle == part or part.endswith("/" + needle) for part in cmdline):
                    found.append(child)
        return found

    async def _not_ready(self, client: httpx.AsyncClient) -> str:
        """What is not ready yet ("" when everything is)."""
        if not (self.data_dir / "demo-account.json").exists():
            return "the demo account (migrations, PostgreSQL)"
        urls = [f"{self.api}/readyz"] + [
            f"http://{self.host}:{self.ops_base_port + i}/readyz"
            for i in (1, 3, 4, 5, 6, 7, *((8,) if self.sandbox else ()))
        ]
        for url in urls:
            try:
                status = (await client.get(url, timeout=2)).status_code
            except httpx.HTTPError as e:
                return f"{url}: {type(e).__name__} {e}"
            if status != 200:
                return f"{url} answered {status}"
        for port in (self.smtp_port, *((self.sandbox_port,) if self.sandbox else ())):
            try:
                _, writer = await asyncio.open_connection(self.host, port)
            except OSError as e:
                return f"SMTP {self.host}:{port}: {e}"
            writer.close()
            await writer.wait_closed()
        return ""

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as Ctrl-C or Kubernetes would; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
