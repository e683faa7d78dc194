"""Priority lanes: transactional mail to a provider while a large bulk backlog for it is queued.

One provider shaped like the shipped ``google`` rule (5 connections, 50 per connection, 100/s), ten
domains on its MX host. OUTBOUND is filled with N bulk one-recipient messages to those domains (published
straight to the shards' bulk subjects, as the router would: this measures the sender), then the
dispatcher's sender runs in-process against a real nats-server, the loopback DNS server and an aiosmtpd
sink. Once bulk is flowing, T transactional messages to the same domains are published one every
``--interval`` seconds; each one's latency is from its publish to its arrival at the sink. Prints the
transactional latencies (p50, p99, max), the bulk rate while they were sent and overall, and how much
of the backlog was still queued when the last transactional message arrived. Not a test: numbers depend
on the machine.

    scripts/uv run python bench/lanes.py --bulk 50000 --transactional 100
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import nats
import structlog
import yaml
from nats.js import JetStreamContext

from postwire.core.lanes import BULK, TRANSACTIONAL
from postwire.core.sharding import shard_for
from postwire.core.topology import Topology, outbound_subject
from postwire.dispatcher.service import serve
from postwire.dispatcher.settings import DispatcherSettings
from postwire.testing.dns import DnsServer
from postwire.testing.nats import NatsServer
from postwire.testing.smtp import SmtpSink
from postwire.v1 import envelope_pb2

SHARDS = 16
MX = "mx.gmail-like.test"
RATE = 100.0
RULES = {"default": {"connection_rate": "unlimited"},
         "providers": {"gmaillike": {"match": ["*.gmail-like.test"], "max_connections": 5,
                                     "max_messages_per_connection": 50, "message_rate": f"{RATE:g}/s"}}}
DOMAINS = [f"lane{i}.test" for i in range(10)]
BODY = ("From: bench@example.test\r\nSubject: lanes bench\r\n\r\n"
        + "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 40).encode()


def _message(mid: str, rcpt: str, stream: str) -> tuple[str, bytes]:
    domain = rcpt.rpartition("@")[2]
    out = envelope_pb2.OutboundMessage(message_id=mid, account_id="bench", mail_from="bench@example.test",
                                       domain=domain, recipients=[rcpt], stream=stream,
                                       body=envelope_pb2.Body(inline=BODY, size=len(BODY)))
    out.accepted_at.GetCurrentTime()
    return outbound_subject(shard_for(domain, SHARDS), stream), out.SerializeToString()


async def _fill(js: JetStreamContext, n: int) -> None:
    """N bulk messages, published 500 at a time (each waits for its PubAck)."""
    for start in range(0, n, 500):
        batch = [_message(f"bulk{i:06d}", f"b{i}@{DOMAINS[i % len(DOMAINS)]}", BULK)
                 for i in range(start, min(n, start + 500))]
        await asyncio.gather(*(js.publish(subject, data) for subject, data in batch))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def main(n_bulk: int, n_tx: int, interval: float, warmup: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    dns = DnsServer().start()
    sink = await SmtpSink().start()
    for domain in DOMAINS:
        dns.add_mail_domain(domain, MX)
    with tempfile.TemporaryDirectory(prefix="pwlanes") as d:
        rules = Path(d) / "shaping.yaml"
        rules.write_text(yaml.safe_dump(RULES))
        nats_server = await NatsServer(Path(d) / "js").start()
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await Topology().apply(js)
            began = time.monotonic()
            await _fill(js, n_bulk)
            print(f"queued {n_bulk} bulk messages in {time.monotonic() - began:.1f} s")
            settings = DispatcherSettings(
                nats_url=nats_server.url, dispatcher_role="sender", dns_nameservers=dns.nameserver,
                mx_port=sink.port, ehlo_hostname="bench.test", shards=SHARDS, shaping_file=rules,
                data_dir=Path(d), log_level="WARNING")
            stop = asyncio.Event()
            started = time.monotonic()
            task = asyncio.create_task(serve(settings, stop))
            received = sink.handler.received

            def bulk_done() -> int:
                return sum(1 for r in received if r.rcpt_tos[0].startswith("b"))

            arrived = sink.handler.arrived
            async with arrived:  # the backlog is being worked on
                await arrived.wait_for(lambda: bulk_done() >= warmup)
            sent: dict[str, float] = {}
            bulk_at_first = bulk_done()
            window_start = time.monotonic()
            for i in range(n_tx):
                rcpt = f"t{i}@{DOMAINS[i % len(DOMAINS)]}"
                subject, data = _message(f"tx{i:04d}", rcpt, TRANSACTIONAL)
                sent[rcpt] = time.monotonic()
                await js.publish(subject, data)
                await asyncio.sleep(interval)
            def tx_done() -> int:
                return sum(1 for r in received if r.rcpt_tos[0].startswith("t"))

            async with arrived:
                await arrived.wait_for(lambda: tx_done() >= n_tx)
            window_end = time.monotonic()
            bulk_at_last = bulk_done()
            stop.set()
            await task
        finally:
            await nc.close()
            await nats_server.stop()
            await sink.stop()
            dns.stop()
    arrived = {r.rcpt_tos[0]: r.at for r in received if r.rcpt_tos[0].startswith("t")}
    latencies = [arrived[rcpt] - at for rcpt, at in sent.items()]
    window = window_end - window_start
    print(f"bulk backlog {n_bulk} to one provider at {RATE:g}/s (5 connections); {n_tx} transactional "
          f"messages, one every {interval:g} s, sent once {bulk_at_first} bulk messages were delivered")
    print(f"transactional latency (publish to the sink): p50 {statistics.median(latencies):.3f} s, "
          f"p99 {_pct(latencies, 0.99):.3f} s, max {max(latencies):.3f} s")
    print(f"bulk meanwhile: {bulk_at_last - bulk_at_first} delivered in {window:.1f} s "
          f"({(bulk_at_last - bulk_at_first) / window:.1f}/s); overall {bulk_at_last} in "
          f"{window_end - started:.1f} s; {n_bulk - bulk_at_last} still queued at the end; "
          f"sink max connections {sink.max_connections}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bulk", type=int, default=50_000)
    p.add_argument("--transactional", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.2, help="seconds between transactional messages")
    p.add_argument("--warmup", type=int, default=500, help="bulk delivered before transactional mail starts")
    a = p.parse_args()
    asyncio.run(main(a.bulk, a.transactional, a.interval, a.warmup))
