"""The load and the sink, the same for every relay: Postfix's smtp-source and smtp-sink, plus a paced client
that measures accept latency (SMTP 250 after the final dot, or HTTP 202) at a fixed rate, and an API load
(POST /v1/messages as fast as the relay answers) for the relay that has an API.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_MESG = re.compile(rb"mesg=(\d+)")


class Sink:
    """Postfix's smtp-sink on a loopback port, counting the messages it accepted (its ``-c`` counters)."""

    def __init__(self, port: int, backlog: int = 1024) -> None:
        self.port = port
        self.received = 0
        self._proc = subprocess.Popen(
            ["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{port}", str(backlog)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = b""
        while chunk := os.read(fd, 4096):
            buf = (buf + chunk)[-256:]
            counts = _MESG.findall(buf)
            if counts:
                self.received = int(counts[-1])

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait()


@dataclass(frozen=True)
class Load:
    """One workload: ``count`` messages, either smtp-source's own ``size``-byte text body on a new session
    per message, or the file ``message`` (headers and body) over ``sessions`` reused sessions; with
    ``via`` "api", POST /v1/messages over ``sessions`` keep-alive connections instead (:func:`api_load`)."""

    name: str
    count: int
    sessions: int = 20
    size: int = 10240
    message: Path | None = None
    via: str = "smtp"

    def smtp_source(self, port: int, count: int | None = None) -> list[str]:
        args = ["smtp-source", "-s", str(self.sessions), "-m", str(count or self.count),
                "-f", "bench@example.test", "-t", "user@bench.test"]
        if self.message is not None:
            args += ["-d", "-F", str(self.message)]
        else:
            args += ["-l", str(self.size)]
        return [*args, f"127.0.0.1:{port}"]


def run_source(load: Load, port: int) -> float:
    """Send the whole load with smtp-source; seconds until the last message was accepted."""
    started = time.perf_counter()
    subprocess.run(load.smtp_source(port), check=True)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Latency:
    sent: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def _summary(samples: list[float], failed: int) -> Latency:
    if not samples:
        return Latency(0, failed, float("nan"), float("nan"), float("nan"))
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Latency(len(samples), failed, 1000 * statistics.median(ordered), 1000 * p99, 1000 * ordered[-1])


async def _expect(reader: asyncio.StreamReader, code: bytes) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise RuntimeError(line.decode(errors="replace").strip())
            return


async def smtp_latency(port: int, body: bytes, rate: float, seconds: float, connections: int = 10) -> Latency:
    """Open-loop SMTP submissions at ``rate``/s over ``connections`` sessions; each sample is the time from
    the final dot to the 250 (what the client waits for to know its mail is safe)."""
    samples: list[float] = []
    failed = 0
    data = body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    per_conn = rate / connections

    async def session(offset: float) -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _expect(reader, b"220")
        writer.write(b"EHLO latency.bench.test\r\n")
        await _expect(reader, b"250")
        loop = asyncio.get_running_loop()
        start = loop.time() + offset
        n = 0
        while (due := start + n / per_conn) < start + seconds:
            await asyncio.sleep(max(0.0, due - loop.time()))
            n += 1
            try:
                writer.write(b"MAIL FROM:<latency@example.test>\r\n")
                await _expect(reader, b"250")
                writer.write(b"RCPT TO:<user@bench.test>\r\n")
                await _expect(reader, b"250")
                writer.write(b"DATA\r\n")
                await _expect(reader, b"354")
                writer.write(data)
                sent = loop.time()
                await _expect(reader, b"250")
                samples.append(loop.time() - sent)
            except RuntimeError:
                failed += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
        writer.close()

    await asyncio.gather(*(session(i / rate) for i in range(connections)))
    return _summary(samples, failed)


def _api_request(url: str, key: str, payload: dict[str, object]) -> bytes:
    """One POST written by hand (like wrk), so the load generator spends little of the relay's CPU."""
    parts = urlsplit(url)
    body = json.dumps(payload).encode()
    return (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _api_response(reader: asyncio.StreamReader) -> bool:
    """Read one response; whether it was 202 Accepted."""
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status.split(b" ", 2)[1:2] == [b"202"]


async def api_load(url: str, key: str, payload: dict[str, object], count: int,
                   connections: int = 20) -> float:
    """POST ``count`` messages as fast as the relay takes them (each of ``connections`` keep-alive
    connections sends its next request when the last was answered); seconds until the last 202."""
    request = _api_request(url, key, payload)
    parts = urlsplit(url)
    left = count

    async def session() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while left > 0:
            left -= 1
            writer.write(request)
            if not await _api_response(reader):
                raise RuntimeError("the API refused a message of the load")
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(connections)))
    return time.perf_counter() - started


async def api_latency(url: str, key: str, payload: dict[str, object], rate: float, seconds: float,
                      connections: int = 20) -> Latency:
    """Open-loop POSTs at ``rate``/s over ``connections`` keep-alive HTTP/1.1 connections; each sample is
    request written → response read."""
    samples: list[float] = []
    failed = 0
    parts = urlsplit(url)
    request = _api_request(url, key, payload)
    per_conn = rate / connections

    async def session(offset: float) -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        loop = asyncio.get_running_loop()
        start = loop.time() + offset
        n = 0
        while (due := start + n / per_conn) < start + seconds:
            await asyncio.sleep(max(0.0, due - loop.time()))
            n += 1
            sent = loop.time()
            writer.write(request)
            if await _api_response(reader):
                samples.append(loop.time() - sent)
            else:
                failed += 1
        writer.close()

    await asyncio.gather(*(session(i / rate) for i in range(connections)))
    return _summary(samples, failed)



def _run(client: Callable[..., Coroutine[Any, Any, Latency]], args: tuple[Any, ...]) -> Latency:
    return asyncio.run(client(*args))


async def apart(client: Callable[..., Coroutine[Any, Any, Latency]], *args: Any) -> Latency:
    """Run a latency client (:func:`smtp_latency`, :func:`api_latency`) in a process of its own. In the
    benchmark's process it would share the GIL with the meter's sampling thread (a walk of every process
    of the relay, once a second), and a response read late counts as the relay's latency: that added
    50 to 70 ms to the API's p99."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, _run, client, args)
