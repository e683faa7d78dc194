"""Throughput of the whole pipeline: N messages of ~10 KB through SMTP to a loopback sink.

Starts the system exactly as `make run` does (postwire run), with a loopback DNS server and SMTP sink
as the destination. Sends with postfix's smtp-source when it is installed (unauthenticated, through
POSTWIRE_TRUSTED_NETWORKS), otherwise with an asyncio client using AUTH. Prints accepted/s (SMTP 250s)
and delivered/s (messages at the sink). Not a test: numbers depend on the machine.

    uv run python bench/throughput.py --messages 2000 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aiosmtplib

from postwire.testing.dns import DnsServer
from postwire.testing.smtp import SmtpSink
from postwire.testing.stack import LocalStack

DOMAINS = [f"bench{i}.test" for i in range(8)]


def _message(i: int) -> bytes:
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 180)[:9_900]
    body = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    return (f"From: bench@example.test\r\nTo: user{i}@{DOMAINS[i % len(DOMAINS)]}\r\n"
            f"Subject: bench {i}\r\nMessage-ID: <bench-{i}@example.test>\r\n\r\n{body}\r\n").encode()


async def _send_asyncio(stack: LocalStack, n: int, concurrency: int) -> float:
    demo = stack.demo()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        async with aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False) as smtp:
            await smtp.login(demo["smtp_username"], demo["smtp_password"])
            while not queue.empty():
                i = queue.get_nowait()
                await smtp.sendmail("bench@example.test", [f"user{i}@{DOMAINS[i % len(DOMAINS)]}"],
                                    _message(i))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def _send_smtp_source(stack: LocalStack, n: int, concurrency: int) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "smtp-source", "-s", str(concurrency), "-m", str(n), "-l", "10240", "-f", "bench@example.test",
        "-t", f"user@{DOMAINS[0]}", f"{stack.host}:{stack.smtp_port}",
    )
    await proc.wait()
    return time.perf_counter() - start


async def main(n: int, concurrency: int, tool: str) -> None:
    dns = DnsServer().start()
    for d in DOMAINS:
        dns.add_mail_domain(d)
    sink = await SmtpSink().start()
    use_source = tool == "smtp-source" or (tool == "auto" and shutil.which("smtp-source") is not None)
    env = {"POSTWIRE_LOG_LEVEL": "WARNING"}
    if use_source:
        env |= {"POSTWIRE_TRUSTED_NETWORKS": "127.0.0.1/32", "POSTWIRE_TRUSTED_ACCOUNT": "demo"}
    with tempfile.TemporaryDirectory(prefix="pwbench") as d:
        stack = await LocalStack(Path(d), dns.nameserver, sink.port, extra_env=env).start()
        try:
            start = time.perf_counter()
            if use_source:
                accept_s = await _send_smtp_source(stack, n, concurrency)
            else:
                accept_s = await _send_asyncio(stack, n, concurrency)
            await sink.handler.wait_for(n, timeout=max(120.0, n / 5))
            deliver_s = time.perf_counter() - start
        finally:
            await stack.stop()
            await sink.stop()
            dns.stop()
    client = "smtp-source" if use_source else "asyncio client"
    print(f"messages={n} size=10KB concurrency={concurrency} client={client}")
    print(f"accepted/s  {n / accept_s:8.1f}  ({accept_s:.2f} s)")
    print(f"delivered/s {n / deliver_s:8.1f}  ({deliver_s:.2f} s, accept → at the sink)")
    print(f"sink connections: max concurrent {sink.max_connections}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--tool", choices=["auto", "smtp-source", "asyncio"], default="auto")
    a = p.parse_args()
    asyncio.run(main(a.messages, a.concurrency, a.tool))
