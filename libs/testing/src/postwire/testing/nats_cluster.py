"""A JetStream cluster of three real nats-servers on loopback (postwire.testing.nats.NatsServer each),
for tests that kill and restart a server under load.

Each server has its own name, store dir and client port; all share a cluster name and know each other's
route (cluster) port, fixed up front so a restarted server comes back on the same addresses with its
state. ``url`` is the comma-separated list POSTWIRE_NATS_URL takes (postwire.core.natsconn).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType

import nats
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig

from postwire.testing.nats import NatsServer
from postwire.testing.ports import free_ports

CLUSTER_NAME = "postwire-test"
_PROBE = "PW_CLUSTER_PROBE"


class NatsCluster:
    def __init__(self, base_dir: Path, size: int = 3, host: str = "127.0.0.1") -> None:
        self.host = host
        ports = free_ports(2 * size, host)
        self.route_ports, client_ports = ports[:size], ports[size:]
        self.names = [f"pw-nats-{i}" for i in range(size)]
        self.servers: list[NatsServer] = []
        for i, name in enumerate(self.names):
            routes = ",".join(f"nats://{host}:{p}" for j, p in enumerate(self.route_ports) if j != i)
            args = ("--server_name", name, "--cluster_name", CLUSTER_NAME,
                    "--cluster", f"nats://{host}:{self.route_ports[i]}", "--routes", routes)
            self.servers.append(NatsServer(base_dir / name, port=client_ports[i], host=host, extra_args=args))

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (the form POSTWIRE_NATS_URL accepts)."""
        return ",".join(s.url for s in self.servers)

    def server(self, name: str) -> NatsServer:
        return self.servers[self.names.index(name)]

    async def start(self, timeout: float = 60) -> NatsCluster:
        await asyncio.gather(*(s.start() for s in self.servers))
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = 60, replicas: int | None = None) -> None:
        """Until a JetStream meta leader exists and a stream with ``replicas`` (default: every server)
        can be created: the cluster then accepts the services' replicated topology."""
        replicas = replicas or len(self.servers)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                nc = await nats.connect(self.url.split(","), connect_timeout=2, allow_reconnect=False)
            except (OSError, TimeoutError, NatsError):
                nc = None
            if nc is not None:
                try:
                    js = nc.jetstream(timeout=5)
                    await js.add_stream(StreamConfig(name=_PROBE, subjects=["pw.cluster.probe"],
                                                     storage=StorageType.MEMORY, num_replicas=replicas))
                    await js.delete_stream(_PROBE)
                    return
                except (TimeoutError, NatsError):
                    pass
                finally:
                    await nc.close()
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"JetStream cluster not ready within {timeout}s")
            await asyncio.sleep(0.5)

    async def stream_leader(self, stream: str) -> str:
        """The server name of the stream's current leader."""
        nc = await nats.connect(self.url.split(","), connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader is not None, info
        return info.cluster.leader

    async def stop(self) -> None:
        for s in self.servers:
            with contextlib.suppress(ProcessLookupError):
                await s.stop()

    async def __aenter__(self) -> NatsCluster:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
