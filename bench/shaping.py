"""Traffic shaping under load: many domains at once, each provider paced to its rule.

50 domains on three shaped test providers (gmail-like: 15 domains on 2 MX hosts, yahoo-like: 10,
outlook-like: 10) plus 15 domains on their own MX hosts (the default rule, a budget per host). OUTBOUND
is filled first with N one-recipient messages round-robin over the domains (published straight to the
shard subjects, as the router would: this measures the sender, not routing or signing), then the
dispatcher's sender runs in-process against a real nats-server, the loopback DNS server and an aiosmtpd
sink. Prints delivered/s overall and, per provider, the configured rate next to the observed one
(arrivals at the sink: (n - 1) / (last - first)). Not a test: numbers depend on the machine.

    scripts/uv run python bench/shaping.py --messages 3000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import tempfile
import time
from pathlib import Path

import structlog
import yaml

from postwire.core.sharding import shard_for
from postwire.core.topology import Topology, outbound_subject
from postwire.dispatcher.service import serve
from postwire.dispatcher.settings import DispatcherSettings
from postwire.testing.dns import DnsServer
from postwire.testing.nats import NatsServer
from postwire.testing.smtp import SmtpSink
from postwire.v1 import envelope_pb2

SHARDS = 16
# provider → (MX hosts, domains, rule)
PROVIDERS: dict[str, tuple[list[str], int, dict[str, object]]] = {
    "gmaillike": (["mx1.gmail-like.test", "mx2.gmail-like.test"], 15,
                  {"match": ["*.gmail-like.test"], "max_connections": 5, "max_messages_per_connection": 50,
                   "message_rate": "40/s"}),
    "yahoolike": (["mta5.am0.yahoo-like.test"], 10,
                  {"match": ["*.yahoo-like.test"], "max_connections": 5, "max_messages_per_connection": 20,
                   "message_rate": "1800/m"}),
    "outlooklike": (["d1.mx.outlook-like.test"], 10,
                    {"match": ["*.outlook-like.test"], "max_connections": 5,
                     "max_messages_per_connection": 50, "message_rate": "90000/h"}),
}
DEFAULT_DOMAINS = 15
DEFAULT_RULE = {"max_connections": 10, "max_messages_per_connection": 100, "message_rate": "100/s",
                "connection_rate": "unlimited"}
BODY = ("From: bench@example.test\r\nSubject: shaping bench\r\n\r\n"
        + "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 40).encode()


def _domains(dns: DnsServer) -> dict[str, str]:
    """domain → provider, with DNS set up."""
    owner: dict[str, str] = {}
    for provider, (hosts, count, _) in PROVIDERS.items():
        for i in range(count):
            domain = f"{provider}{i}.test"
            dns.add_mail_domain(domain, hosts[i % len(hosts)])
            owner[domain] = provider
    for i in range(DEFAULT_DOMAINS):
        domain = f"plain{i}.test"
        dns.add_mail_domain(domain)
        owner[domain] = "default"
    return owner


async def _fill(nats_url: str, domains: list[str], n: int) -> None:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await Topology().apply(js)
    for i in range(n):
        domain = domains[i % len(domains)]
        out = envelope_pb2.OutboundMessage(message_id=f"bench{i:06d}", account_id="bench",
                                           mail_from="bench@example.test", domain=domain,
                                           recipients=[f"u{i}@{domain}"],
                                           body=envelope_pb2.Body(inline=BODY, size=len(BODY)))
        out.accepted_at.GetCurrentTime()
        await js.publish(outbound_subject(shard_for(domain, SHARDS)), out.SerializeToString())
    await nc.close()


def _configured(provider: str) -> float:
    rule = PROVIDERS[provider][2] if provider in PROVIDERS else DEFAULT_RULE
    count, _, unit = str(rule["message_rate"]).partition("/")
    return float(count) / {"s": 1, "m": 60, "h": 3600}[unit]


async def main(n: int, concurrency: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    dns = DnsServer().start()
    sink = await SmtpSink().start()
    owner = _domains(dns)
    with tempfile.TemporaryDirectory(prefix="pwshape") as d:
        rules = Path(d) / "shaping.yaml"
        rules.write_text(yaml.safe_dump({"default": DEFAULT_RULE,
                                         "providers": {p: r for p, (_, _, r) in PROVIDERS.items()}}))
        nats_server = await NatsServer(Path(d) / "js").start()
        try:
            await _fill(nats_server.url, list(owner), n)
            settings = DispatcherSettings(
                nats_url=nats_server.url, dispatcher_role="sender", dns_nameservers=dns.nameserver,
                mx_port=sink.port, ehlo_hostname="bench.test", shards=SHARDS, shaping_file=rules,
                data_dir=Path(d), log_level="WARNING", max_concurrency=concurrency)
            stop = asyncio.Event()
            start = time.monotonic()
            task = asyncio.create_task(serve(settings, stop))
            await sink.handler.wait_for(n, timeout=max(120.0, n / 10))
            elapsed = time.monotonic() - start
            stop.set()
            await task
        finally:
            await nats_server.stop()
            await sink.stop()
            dns.stop()
    _report(n, elapsed, owner, sink, concurrency)


def _report(n: int, elapsed: float, owner: dict[str, str], sink: SmtpSink, concurrency: int) -> None:
    arrivals: dict[str, list[float]] = collections.defaultdict(list)
    for r in sink.handler.received:
        arrivals[owner[r.rcpt_tos[0].rpartition("@")[2]]].append(r.at)
    print(f"messages={n} domains={len(owner)} shards={SHARDS} concurrency={concurrency} "
          f"delivered/s={n / elapsed:.1f} "
          f"({elapsed:.1f} s from start to last arrival), sink max connections={sink.max_connections}")
    print(f"{'provider':<12} {'domains':>7} {'messages':>8} {'configured/s':>12} {'observed/s':>10} "
          f"{'ratio':>6}")
    for provider in [*PROVIDERS, "default"]:
        times = sorted(arrivals[provider])
        domains = sum(1 for p in owner.values() if p == provider)
        configured = _configured(provider) * (DEFAULT_DOMAINS if provider == "default" else 1)
        observed = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        note = " (sum of per-host budgets: a ceiling)" if provider == "default" else ""
        print(f"{provider:<12} {domains:>7} {len(times):>8} {configured:>12.1f} {observed:>10.1f} "
              f"{observed / configured:>6.2f}{note}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=128, help="POSTWIRE_MAX_CONCURRENCY of the sender")
    a = p.parse_args()
    asyncio.run(main(a.messages, a.concurrency))
