"""A JetStream cluster of three real nats-servers on loopback (postwire.testing.nats.NatsServer each),
for tests that kill and restart a server under load.

Each server has its own name, store dir and client port; all share a cluster name and know each other's
route (cluster) port, fixed up front so a restarted server comes back on the same addresses with its
state. ``url`` is the comma-separated list POSTWIRE_NATS_URL takes (postwire.core.natsconn).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType

import nats
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ClusterInfo, StorageType, StreamConfig

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
        leaders = await self.stream_leaders([stream])
        leader = leaders[stream]
        assert leader is not None, f"{stream} has no leader"
        return leader

    async def stream_leaders(self, streams: Iterable[str]) -> dict[str, str | None]:
        """Each stream's current leader (``cluster.leader`` of its stream info), None while it has none
        or its info cannot be had (no leader to answer)."""
        found: dict[str, str | None] = {}
        async with self._client() as js:
            for stream in streams:
                try:
                    info = await js.stream_info(stream)
                except (TimeoutError, NatsError):
                    found[stream] = None
                    continue
                found[stream] = info.cluster.leader if info.cluster is not None else None
        return found

    async def wait_for_leaders(self, streams: Iterable[str], not_on: str, timeout: float = 120) -> None:
        """Until each stream has a leader other than ``not_on`` (a killed server): the elections after a
        kill are over."""
        streams = list(streams)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            leaders = await self.stream_leaders(streams)
            if all(leader is not None and leader != not_on for leader in leaders.values()):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"no new leaders within {timeout}s: {leaders}")
            await asyncio.sleep(0.2)

    async def wait_whole(self, streams: Iterable[str], timeout: float = 120) -> None:
        """Until every stream and each of its consumers has a leader and all its replicas are online and
        current: a server that was restarted has caught up, so the next one may be killed without a raft
        group losing its quorum."""
        streams = list(streams)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            lagging = await self._lagging(streams)
            if not lagging:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"cluster not whole within {timeout}s: {lagging}")
            await asyncio.sleep(0.5)

    async def _lagging(self, streams: list[str]) -> list[str]:
        lagging = []
        async with self._client() as js:
            for stream in streams:
                try:
                    info = await js.stream_info(stream)
                except (TimeoutError, NatsError) as e:
                    lagging.append(f"{stream}: {type(e).__name__}")
                    continue
                cluster = info.cluster
                if cluster is None or cluster.leader is None:
                    lagging.append(f"{stream}: no leader")
                    continue
                lagging += self._behind(stream, cluster)
                try:
                    consumers = await js.consumers_info(stream)
                except (TimeoutError, NatsError) as e:
                    lagging.append(f"{stream} consumers: {type(e).__name__}")
                    continue
                for c in consumers:
                    if c.config.num_replicas != 1:  # not a watcher's ordered consumer: in memory, alone
                        lagging += self._behind(f"{stream}/{c.name}", c.cluster)
        return lagging

    def _behind(self, what: str, cluster: ClusterInfo | None) -> list[str]:
        """Why a stream's or consumer's raft group is not whole ([] when it is)."""
        if cluster is None or cluster.leader is None:
            return [f"{what}: no leader"]
        replicas = cluster.replicas or []
        behind = [r.name for r in replicas if r.offline or not r.current]
        if len(replicas) != len(self.servers) - 1 or behind:
            return [f"{what}: replicas {[r.name for r in replicas]} behind {behind}"]
        return []

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[JetStreamContext]:
        nc = await nats.connect(self.url.split(","), connect_timeout=2, max_reconnect_attempts=2)
        try:
            yield nc.jetstream(timeout=2)
        finally:
            await nc.close()

    async def stop(self) -> None:
        for s in self.servers:
            with contextlib.suppress(ProcessLookupError):
                await s.stop()

    async def __aenter__(self) -> NatsCluster:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
