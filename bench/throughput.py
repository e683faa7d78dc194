"""Postwire beside Postfix, in one run, on this machine: the same load, the same sink, loopback only.

For each relay (Debian's Postfix in a private instance, then Postwire started as `make run` starts it)
and each load (10 KB text from smtp-source with a session per message; the 29 KB M_ template of the
shared corpus as HTML over 20 reused sessions, with ``X-Postwire-InlineCSS: true``; for Postwire also
the text load's body through POST /v1/messages over 20 keep-alive connections):

1. a warm-up of ``--warmup`` messages (not measured);
2. the load: smtp-source (or the API client) → relay → smtp-sink. Accepted/s is the load divided by the
   time to submit it, delivered/s by the time until the sink has every message. CPU is every process of
   the relay (NATS and PostgreSQL included, the load tool and sink not) from the first message until
   the relay is idle again, so work that lags behind delivery (recording events) is counted;
3. accept latency at half of the load's delivered rate (each intake at half of its own maximum): an
   open-loop client sends for ``--latency-s`` seconds and times each final dot → 250 (10 sessions) or
   POST /v1/messages → 202 (20 connections). Memory per component is the peak proportional set size
   (PSS: shared pages counted once, as a container's memory limit counts them) sampled every second in
   step 2 and before and after step 3 (a sample stalls the processes it reads, so not during it).

Postwire's traffic shaping is set like Postfix's defaults for the destination (20 connections, no rate
limit): the shipped rules pace one MX host to 100/s, right for the internet but not a measure of the
engine. Needs root for Postfix (scripts/bench-deps installs it); without it only Postwire is measured.

    make bench                       # 5000 text + 5000 API + 3000 HTML messages (docs/performance.md)
    scripts/uv run python bench/throughput.py --messages 2000 --api-messages 0 --html-messages 1000 \
        --relays postwire
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path

import psutil
from load import Latency, Load, Sink, apart, api_latency, api_load, run_source, smtp_latency
from measure import Meter, Usage, tree, wait_until
from postfix_relay import PostfixRelay, unavailable

from postwire.testing.corpus import corpus_dir
from postwire.testing.dns import DnsServer
from postwire.testing.ports import free_port
from postwire.testing.stack import LocalStack

DOMAIN = "bench.test"
TEMPLATE = "M_mailchimp-base_boxed_2column_query.html"
# the destination's rule, like Postfix's default_destination_concurrency_limit and no rate limit
SHAPING = """\
default:
  max_connections: 20
  max_messages_per_connection: 1000
  message_rate: unlimited
  connection_rate: unlimited
  tls: optional
"""
TEXT_BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 180)[:10_000]


@dataclass
class Result:
    relay: str
    load: str
    messages: int
    accepted_per_s: float
    delivered_per_s: float
    cpu_ms_per_message: float
    cpu_ms_by_component: dict[str, float]
    smtp_latency: Latency | None = None
    api_latency: Latency | None = None
    peak_memory_mb: dict[str, float] = field(default_factory=dict)


def html_message(folder: Path) -> Path:
    """The HTML load's message file for smtp-source -F: the template, quoted-printable, asking for CSS
    inlining (Postfix passes the header through like any other)."""
    msg = EmailMessage()
    msg["From"] = "bench@example.test"
    msg["To"] = f"user@{DOMAIN}"
    msg["Subject"] = "HTML benchmark"
    msg["X-Postwire-InlineCSS"] = "true"
    html = (corpus_dir() / "templates" / TEMPLATE).read_text()
    msg.set_content(html, subtype="html", cte="quoted-printable")
    path = folder / "html.eml"
    path.write_bytes(msg.as_bytes())
    return path


class Relay:
    """What the benchmark needs of a relay under test: its SMTP port, its own sink, its API (URL of
    POST /v1/messages and a key) if it has one, and its processes."""

    name: str
    smtp_port: int
    sink: Sink
    api: tuple[str, str] | None = None

    def processes(self) -> list[tuple[psutil.Process, str]]:
        raise NotImplementedError

    def idle(self) -> bool:
        return True

    async def stop(self) -> None:
        raise NotImplementedError


class PostfixUnderTest(Relay):
    name = "postfix"

    def __init__(self, root: Path) -> None:
        self.sink = Sink(free_port())
        self.smtp_port = free_port()
        self.postfix = PostfixRelay(root, self.smtp_port, self.sink.port).start()

    def processes(self) -> list[tuple[psutil.Process, str]]:
        return tree(self.postfix.master(), lambda p, top: p.name())

    def idle(self) -> bool:
        return self.postfix.queued() == 0

    async def stop(self) -> None:
        self.postfix.stop()
        self.sink.stop()


def _component(p: psutil.Process, top: psutil.Process) -> str:
    """A Postwire process's component: the service (or nats-server) it is, or was forked from."""
    try:
        cmdline = top.cmdline()
    except psutil.Error:
        return "?"
    if any(part.endswith("nats-server") for part in cmdline):
        return "nats-server"
    for part in cmdline:
        if part.startswith("postwire.") and part != "postwire.cli":
            return part.removeprefix("postwire.").replace("_", "-")
    return "supervisor"


class PostwireUnderTest(Relay):
    name = "postwire"

    def __init__(self, stack: LocalStack, dns: DnsServer, sink: Sink) -> None:
        self.stack, self.dns, self.sink = stack, dns, sink
        self.smtp_port = stack.smtp_port
        self.api = (f"{stack.api}/v1/messages", stack.demo()["api_key"])
        self._postgres: psutil.Process | None = None

    @classmethod
    async def start(cls, work: Path, bin_dir: Path | None = None) -> PostwireUnderTest:
        """Postwire as `make run` starts it, from the venv ``bin_dir`` (default: this interpreter's)."""
        sink = Sink(free_port())
        dns = DnsServer().start()
        dns.add_mail_domain(DOMAIN)
        (work / "shaping.yaml").write_text(SHAPING)
        env = {"POSTWIRE_LOG_LEVEL": "WARNING", "POSTWIRE_SHAPING_FILE": str(work / "shaping.yaml"),
               "POSTWIRE_TRUSTED_NETWORKS": "127.0.0.1/32", "POSTWIRE_TRUSTED_ACCOUNT": "demo"}
        stack = LocalStack(work / "postwire", dns.nameserver, sink.port, extra_env=env, bin_dir=bin_dir)
        return cls(await stack.start(), dns, sink)

    async def stop(self) -> None:
        await self.stack.stop()
        self.dns.stop()
        self.sink.stop()

    def postgres(self) -> psutil.Process | None:
        """The embedded PostgreSQL's postmaster (pg_ctl starts it apart from the supervisor's tree)."""
        if self._postgres is None or not self._postgres.is_running():
            pgdata = str(self.stack.data_dir / "pgdata")
            for p in psutil.process_iter(["name", "cmdline"]):
                if p.info["name"] == "postgres" and pgdata in " ".join(p.info["cmdline"] or ()):
                    self._postgres = p
                    break
        return self._postgres

    def processes(self) -> list[tuple[psutil.Process, str]]:
        assert self.stack.proc is not None
        return (tree(psutil.Process(self.stack.proc.pid), _component)
                + tree(self.postgres(), lambda p, top: "postgresql"))


def _quiet(meter: Meter, timeout_s: float = 60.0) -> None:
    """Wait until the relay's processes together use under 5 % of a core for a second."""
    deadline = time.monotonic() + timeout_s
    last = meter.total()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = meter.total()
        if now - last < 0.05:
            return
        last = now


Send = Callable[[int], float]  # sends a number of messages of a load; seconds until all were accepted


def sender_for(relay: Relay, load: Load) -> Send:
    if load.via == "api":
        assert relay.api is not None, f"{relay.name} has no API"
        url, key = relay.api
        return lambda n: asyncio.run(api_load(url, key, _api_payload(), n, load.sessions))
    return lambda n: run_source(replace(load, count=n), relay.smtp_port)


def deliver(relay: Relay, send: Send, count: int) -> tuple[float, float]:
    """Send ``count`` messages; (seconds to accept them all, seconds until the sink had them)."""
    expected = relay.sink.received + count
    started = time.perf_counter()
    accept_s = send(count)
    if not wait_until(lambda: relay.sink.received >= expected, timeout_s=max(120.0, count / 5)):
        missing = expected - relay.sink.received
        raise RuntimeError(f"{relay.name}: {missing} of {count} messages never arrived")
    return accept_s, time.perf_counter() - started


@dataclass
class Round:
    """One relay's share of one round of a load."""

    messages: int
    accept_s: float
    deliver_s: float
    usage: Usage


async def one_round(relay: Relay, send: Send, count: int) -> Round:
    """``count`` messages through an idle relay, metered until it is idle again (so work that lags
    behind delivery, recording events, is counted). Blocking steps in threads: the loop also runs
    Postwire's supervisor."""
    await asyncio.to_thread(wait_until, relay.idle, 60)
    await asyncio.to_thread(_quiet, Meter(relay.processes))
    meter = Meter(relay.processes).start()
    accept_s, deliver_s = await asyncio.to_thread(deliver, relay, send, count)
    await asyncio.to_thread(_quiet, meter)
    return Round(count, accept_s, deliver_s, meter.stop())


async def measure(relays: list[Relay], load: Load, args: argparse.Namespace) -> list[Result]:
    """One load through every relay that can take it: a warm-up each, then ``args.rounds`` rounds in
    which the relays take turns with an equal share of the load (the machine's speed drifts over
    minutes; taking turns gives every relay the same drift), then each relay's accept latency at half
    of its delivered rate."""
    takers = [r for r in relays if load.via == "smtp" or r.api is not None]
    senders = {r.name: sender_for(r, load) for r in takers}
    for relay in takers:
        await asyncio.to_thread(deliver, relay, senders[relay.name], args.warmup)
    profilers = {r.name: start_profilers(r, args.profile / load.name)
                 if args.profile and isinstance(r, PostwireUnderTest) else [] for r in takers}
    rounds: dict[str, list[Round]] = {r.name: [] for r in takers}
    shares = [load.count // args.rounds + (i < load.count % args.rounds) for i in range(args.rounds)]
    for share in shares:
        for relay in takers:
            rounds[relay.name].append(await one_round(relay, senders[relay.name], share))
    results = []
    for relay in takers:
        result = _combine(relay, load, rounds[relay.name])
        await _latency_and_memory(relay, load, result, args.latency_s)
        stop_profilers(profilers[relay.name])  # the profiles cover the load and the latency run
        results.append(result)
    return results


def _combine(relay: Relay, load: Load, rounds: list[Round]) -> Result:
    cpu: dict[str, float] = defaultdict(float)
    peaks: dict[str, int] = defaultdict(int)
    for r in rounds:
        for k, v in r.usage.cpu_s.items():
            cpu[k] += v
        for k, m in r.usage.peak_memory.items():
            peaks[k] = max(peaks[k], m)
    usage = Usage(sum(r.usage.total_s for r in rounds), dict(cpu), dict(peaks))
    count = sum(r.messages for r in rounds)
    result = Result(relay.name, load.name, count, count / sum(r.accept_s for r in rounds),
                    count / sum(r.deliver_s for r in rounds), 1000 * usage.total_s / count,
                    usage.per_message_ms(count))
    result.peak_memory_mb = {k: round(v / 2**20, 1) for k, v in peaks.items()}
    return result


async def _latency_and_memory(relay: Relay, load: Load, result: Result, latency_s: float) -> None:
    """Accept latency at half the delivered rate (each intake at half of its own maximum), and memory."""
    rate = result.delivered_per_s
    # memory before and after the latency run, not during it: a sample walks every process of the relay
    # and reads its page tables, and that stall showed in the latency (API p99 35-54 ms unmetered, 73-92
    # metered); the load itself, at twice the rate, was sampled every second
    memory = Meter(relay.processes, interval_s=None).start()
    if load.via == "api":
        assert relay.api is not None
        url, key = relay.api
        result.api_latency = await apart(api_latency, url, key, _api_payload(), rate / 2, latency_s)
    else:
        body = load.message.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") if load.message \
            else _text_message()
        result.smtp_latency = await apart(smtp_latency, relay.smtp_port, body, rate / 2, latency_s)
    for k, v in memory.stop().peak_memory.items():
        result.peak_memory_mb[k] = max(result.peak_memory_mb.get(k, 0.0), round(v / 2**20, 1))


def start_profilers(relay: Relay, folder: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on every Python process of the relay (collapsed stacks, summarised by bench/hotspots.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for p, label in relay.processes():
        try:
            if "python" not in p.name() and "postwire" not in " ".join(p.cmdline()):
                continue
        except psutil.Error:
            continue
        out = folder / f"{label}-{p.pid}.txt"
        cmd = ["py-spy", "record", "--format", "raw", "--rate", "100", "--pid", str(p.pid),
               "-o", str(out)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        proc.wait()


def _text_message() -> bytes:
    lines = "\r\n".join(TEXT_BODY[i:i + 76] for i in range(0, len(TEXT_BODY), 76))
    return (f"From: bench@example.test\r\nTo: user@{DOMAIN}\r\nSubject: latency\r\n\r\n{lines}\r\n").encode()


def _api_payload() -> dict[str, object]:
    return {"from": "bench@example.test", "to": [f"user@{DOMAIN}"], "subject": "latency", "text": TEXT_BODY}


async def start_relays(names: list[str], work: Path) -> list[Relay]:
    relays: list[Relay] = []
    if "postfix" in names:
        relays.append(PostfixUnderTest(work / "postfix"))
    if "postwire" in names:
        relays.append(await PostwireUnderTest.start(work))
    return relays


def _latency(lat: Latency | None) -> str:
    return "-" if lat is None else f"{lat.p50_ms:.1f} / {lat.p99_ms:.1f}" + (f" ({lat.failed} failed)"
                                                                            if lat.failed else "")


def report(results: list[Result], loads: list[Load]) -> None:
    for load in loads:
        rows = [r for r in results if r.load == load.name]
        base = next((r for r in rows if r.relay == "postfix"), None)
        if load.via == "api":
            how = f"POST /v1/messages of the text load's body, {load.sessions} keep-alive connections"
        elif load.message is not None:
            how = f"{TEMPLATE}, reused sessions, smtp-source -s {load.sessions}"
        else:
            how = f"its own text, a session per message, smtp-source -s {load.sessions}"
        print(f"\n## {load.name}: {load.count} messages ({how})")
        print(f"{'relay':<9} {'accepted/s':>10} {'delivered/s':>11} {'x postfix':>9} {'CPU ms/msg':>10}  "
              f"{'SMTP accept p50 / p99 ms':<26} {'API 202 p50 / p99 ms':<22}")
        for r in rows:
            ratio = f"{r.delivered_per_s / base.delivered_per_s:.2f}" if base else "-"
            print(f"{r.relay:<9} {r.accepted_per_s:>10.0f} {r.delivered_per_s:>11.0f} {ratio:>9} "
                  f"{r.cpu_ms_per_message:>10.2f}  {_latency(r.smtp_latency):<26} "
                  f"{_latency(r.api_latency):<22}")
        for r in rows:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_ms_by_component.items() if v >= 0.005)
            print(f"  {r.relay} CPU ms/msg by component: {parts}")
            by_size = sorted(r.peak_memory_mb.items(), key=lambda kv: -kv[1])
            mem = ", ".join(f"{k} {v:.0f}" for k, v in by_size)
            print(f"  {r.relay} peak memory (PSS) MB: {mem}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=5000, help="text messages (0 skips the text load)")
    p.add_argument("--html-messages", type=int, default=3000, help="HTML messages (0 skips the HTML load)")
    p.add_argument("--api-messages", type=int, default=5000,
                   help="text messages through Postwire's API (0 skips the API load)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3, help="turns the relays take at each load")
    p.add_argument("--latency-s", type=float, default=10.0)
    p.add_argument("--relays", default="postfix,postwire")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--profile", type=Path, help="py-spy every Postwire process into this folder")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, queues) for a look")
    args = p.parse_args()
    missing = [t for t in ("smtp-source", "smtp-sink") if shutil.which(t) is None]
    if missing:
        sys.exit(f"{', '.join(missing)} not found: run scripts/bench-deps (installs Debian's postfix)")
    relays = args.relays.split(",")
    if "postfix" in relays and (why := unavailable()) is not None:
        print(f"Postfix skipped: {why}", file=sys.stderr)
        relays.remove("postfix")
    work = Path(tempfile.mkdtemp(prefix="pwbench"))
    try:
        loads = []
        if args.messages:
            loads.append(Load("text", args.messages))
        if args.api_messages:
            loads.append(Load("api", args.api_messages, via="api"))
        if args.html_messages:
            if not (corpus_dir() / "templates" / TEMPLATE).exists():
                print(f"HTML load skipped: {corpus_dir() / 'templates' / TEMPLATE} not found "
                      "(set POSTWIRE_CORPUS_DIR)", file=sys.stderr)
            else:
                loads.append(Load("html", args.html_messages, message=html_message(work)))
        results: list[Result] = []
        running = await start_relays(relays, work)
        try:
            for load in loads:
                results += await measure(running, load, args)
        finally:
            for relay in running:
                await relay.stop()
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results, loads)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    asyncio.run(main())
