"""The whole system on a three-server JetStream cluster (replicas 3) rides out NATS failovers: while mail
flows through the API and SMTP, the server that leads each stream is killed with SIGKILL in turn, the
survivors elect new leaders, and it is restarted and caught up before the next kill.

Checked: no service process exits or is restarted (same pids, no ``service.exited``); every accepted
message reaches the destination exactly once and is recorded as delivered, with its webhook posted;
mail submitted after the last failover goes through the same way. A submission refused meanwhile
(503 / 451) is retried by the client, as a real client would. No step is timed: each waits for a
condition with a generous timeout. The output gives each kill's intake pause (how long the API and SMTP
refused), the figure docs/nats.md quotes:

    scripts/uv run pytest tests/cluster -q -s
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import nats
import psutil
import pytest
import pytest_asyncio

from postwire.core.topology import (
    ARCHIVE,
    BODIES,
    EVENTS,
    INBOUND,
    OUTBOUND,
    SUPPRESSIONS,
    TRACKING,
    WEBHOOKS,
)
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.nats_cluster import NatsCluster
from postwire.testing.smtp import SmtpSink
from postwire.testing.stack import LocalStack
from postwire.testing.webhook_endpoint import Receiver, running_receiver

pytestmark = pytest.mark.slow  # a 3-node NATS cluster under load

DOMAIN = "cluster.test"
SERVICES = ("ingest-smtp", "api-gateway", "dispatcher", "transformer", "bounce-receiver", "recorder",
            "webhook-notifier")
# every stream, object store and bucket: each one's leader is killed once
STREAMS = (INBOUND, OUTBOUND, EVENTS, WEBHOOKS, ARCHIVE, f"KV_{SUPPRESSIONS}", f"KV_{TRACKING}",
           f"OBJ_{BODIES}")
# the streams the pipeline's durable consumers read: empty and fully acknowledged once all is done
QUEUES = (INBOUND, OUTBOUND, EVENTS, WEBHOOKS)
SUBMIT_EVERY_S = 0.1  # the load: one submission (API and SMTP in turn) every this long
CONCURRENCY = 16
SETTLE_S = 3.0  # load before the first kill and after each restart
SENTINELS = 10
SUBMIT_TIMEOUT_S = 180.0  # one submission, retries included: generous, the clusters' elections are not
_SMTP_ID = re.compile(rb"\(Postwire\) with \w+ id (\w+)")
_API_ID = re.compile(rb"^Message-ID: <([^@>\s]+)@", re.MULTILINE | re.IGNORECASE)


@dataclass
class Attempt:
    at: float
    kind: str  # "api" or "smtp"
    ok: bool


@dataclass
class Load:
    accepted: dict[str, str] = field(default_factory=dict)  # message id → recipient
    attempts: list[Attempt] = field(default_factory=list)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)

    def refuse(self, kind: str, why: str, queue: bool) -> None:
        """A refusal; ``queue`` when it says the queue (NATS) was unavailable (503 / 451)."""
        self.refused[f"{kind} {why}"] += 1
        if queue:
            self.attempts.append(Attempt(time.monotonic(), kind, False))

    def accept(self, kind: str, message_id: str, rcpt: str) -> None:
        self.accepted[message_id] = rcpt
        self.attempts.append(Attempt(time.monotonic(), kind, True))


@dataclass
class Kill:
    victim: str
    led: list[str]  # the streams it led when killed
    at: float
    elected: float = 0.0  # every stream it led had a new leader
    whole: float = 0.0  # restarted and caught up


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[NatsCluster]:
    # a short path: nats-server store dirs and the stack's sockets stay well inside path limits
    with tempfile.TemporaryDirectory(prefix="pwnc") as d:
        c = NatsCluster(Path(d))
        try:
            await c.start()
            yield c
        finally:
            await c.stop()


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as rec:
        yield rec


@pytest_asyncio.fixture
async def cluster_stack(tmp_path: Path, dns_server: DnsServer, cluster: NatsCluster,
                        smtp_sink: SmtpSink) -> AsyncIterator[LocalStack]:
    dns_server.add_mail_domain(DOMAIN)
    data_dir = tmp_path / "stack"
    stack = LocalStack(data_dir, dns_server.nameserver, smtp_sink.port, nats_external_url=cluster.url,
                       extra_env={"POSTWIRE_STREAM_REPLICAS": "3", "POSTWIRE_RETRY_BASE_S": "0.5",
                                  "POSTWIRE_RETRY_MAX_S": "2",
                                  # the test's webhook receiver listens on plain http on loopback
                                  "POSTWIRE_WEBHOOK_ALLOW_HTTP": "true",
                                  "POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "true",
                                  "POSTWIRE_WEBHOOK_RECONCILE_S": "0.5"})
    try:
        await stack.start()
        yield stack
    finally:
        code = await stack.stop()
        assert code == 0, f"postwire run exited with {code}"
        leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                     if any(str(data_dir) in part for part in (p.info["cmdline"] or []))]
        assert leftovers == [], f"processes left behind: {leftovers}"


def _api(stack: LocalStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api, timeout=30,
                             headers={"Authorization": f"Bearer {stack.demo()['api_key']}"})


async def _submit_api(client: httpx.AsyncClient, rcpt: str, load: Load) -> None:
    """POST until 202, with one Idempotency-Key for all tries (a retry after a lost answer must not send
    twice). 503 (queue unavailable), 409 (the same key still in flight) and transport errors are retried."""
    key = str(uuid.uuid4())
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    while True:
        try:
            r = await client.post("/v1/messages", headers={"Idempotency-Key": key},
                                  json={"from": "sender@example.test", "to": [rcpt], "subject": rcpt,
                                        "text": f"cluster test {rcpt}"})
            if r.status_code == 202:
                load.accept("api", r.json()["id"], rcpt)
                return
            assert r.status_code in (409, 503), (r.status_code, r.text)
            load.refuse("api", str(r.status_code), queue=r.status_code == 503)
        except httpx.TransportError as e:
            load.refuse("api", type(e).__name__, queue=False)
        assert time.monotonic() < deadline, f"{rcpt} not accepted within {SUBMIT_TIMEOUT_S}s"
        await asyncio.sleep(0.3)


async def _submit_smtp(stack: LocalStack, rcpt: str, load: Load) -> None:
    """Send until 250; a 4xx reply (451 while NATS does not confirm) or a dropped connection is retried."""
    demo = stack.demo()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.test", rcpt, rcpt
    msg.set_content(f"cluster test {rcpt}")
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    while True:
        try:
            async with aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False,
                                       timeout=30) as smtp:
                await smtp.login(demo["smtp_username"], demo["smtp_password"])
                errors, reply = await smtp.sendmail("sender@example.test", [rcpt], msg.as_bytes())
            assert errors == {}
            load.accept("smtp", reply.rsplit(" ", 1)[-1], rcpt)
            return
        except aiosmtplib.SMTPResponseException as e:
            assert 400 <= e.code < 500, (e.code, e.message)
            load.refuse("smtp", str(e.code), queue=e.code == 451)
        except (aiosmtplib.SMTPException, OSError) as e:
            load.refuse("smtp", type(e).__name__, queue=False)
        assert time.monotonic() < deadline, f"{rcpt} not accepted within {SUBMIT_TIMEOUT_S}s"
        await asyncio.sleep(0.3)


async def _run_load(stack: LocalStack, client: httpx.AsyncClient, load: Load, stop: asyncio.Event,
                    prefix: str) -> None:
    """Submit one message every SUBMIT_EVERY_S, API and SMTP in turn, until ``stop``; then wait for every
    submission to be accepted."""
    limit = asyncio.Semaphore(CONCURRENCY)
    jobs: list[asyncio.Task[None]] = []

    async def one(n: int) -> None:
        async with limit:
            await _submit(stack, client, load, n, prefix)

    n = 0
    while not stop.is_set():
        jobs.append(asyncio.create_task(one(n)))
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUBMIT_EVERY_S)
    await asyncio.gather(*jobs)


async def _submit(stack: LocalStack, client: httpx.AsyncClient, load: Load, n: int, prefix: str) -> None:
    """The ``n``-th message: over SMTP when odd, else over the API; to a recipient of its own."""
    if n % 2:
        await _submit_smtp(stack, f"{prefix}smtp{n:05d}@{DOMAIN}", load)
    else:
        await _submit_api(client, f"{prefix}api{n:05d}@{DOMAIN}", load)


async def _kill_each_leader(cluster: NatsCluster, log: list[Kill]) -> None:
    """For each stream whose leader was not killed yet: kill -9 the server that leads it now, wait for the
    survivors to elect new leaders of everything it led, restart it and wait until it has caught up."""
    killed: set[str] = set()
    for stream in STREAMS:
        if stream in killed:
            continue
        leaders = await cluster.stream_leaders(STREAMS)
        victim = leaders[stream]
        assert victim is not None, leaders
        kill = Kill(victim, [s for s, leader in leaders.items() if leader == victim], time.monotonic())
        await cluster.server(victim).stop(kill=True)
        await cluster.wait_for_leaders(kill.led, not_on=victim)
        kill.elected = time.monotonic()
        log.append(kill)
        await asyncio.sleep(SETTLE_S)  # the pipeline runs on two servers for a while
        await cluster.server(victim).start()
        await cluster.wait_whole(STREAMS, timeout=180)
        kill.whole = time.monotonic()
        killed.update(kill.led)
        await asyncio.sleep(SETTLE_S)


def _pids(stack: LocalStack) -> dict[str, list[int]]:
    return {name: sorted(p.pid for p in stack.processes(name)) for name in SERVICES}


def _postwire_id(data: bytes) -> str:
    """The Postwire message id of a delivered copy: ingest-smtp's Received header names it,
    the API's Message-ID carries it."""
    head = data.split(b"\r\n\r\n", 1)[0]
    if found := _SMTP_ID.search(head):
        return found.group(1).decode()
    found = _API_ID.search(head)
    assert found is not None, head[:500]
    return found.group(1).decode()


def _via_smtp(sink: SmtpSink) -> set[str]:
    """The ids of the delivered copies that were submitted over SMTP."""
    return {m.group(1).decode() for r in sink.handler.received
            if (m := _SMTP_ID.search(r.data.split(b"\r\n\r\n", 1)[0]))}


def _delivered(sink: SmtpSink) -> collections.Counter[str]:
    return collections.Counter(_postwire_id(r.data) for r in sink.handler.received
                               if any(a.lower().endswith("@" + DOMAIN) for a in r.rcpt_tos))


def _webhooked(receiver: Receiver) -> collections.Counter[str]:
    """Message ids of the ``delivered`` webhooks received, with how often each came."""
    events = (json.loads(body)["event"] for body, _ in receiver.posts)
    return collections.Counter(e["message_id"] for e in events if e["type"] == "delivered")


async def _quiet(cluster: NatsCluster) -> bool:
    """Every durable consumer of the pipeline has nothing pending and nothing unacknowledged: every
    redelivery (an ack lost in a failover comes back after ack_wait) has happened."""
    nc = await nats.connect(cluster.url.split(","), connect_timeout=2)
    try:
        js = nc.jetstream(timeout=5)
        for stream in QUEUES:
            for c in await js.consumers_info(stream):
                if c.num_pending or c.num_ack_pending:
                    return False
        return True
    finally:
        await nc.close()


async def _recorded_delivered(client: httpx.AsyncClient, ids: list[str]) -> list[str]:
    """The ids whose recipient is not (yet) recorded as delivered."""
    missing = []
    for mid in ids:
        r = await client.get(f"/v1/messages/{mid}")
        if r.status_code != 200 or [x["status"] for x in r.json()["recipients"]] != ["delivered"]:
            missing.append(mid)
    return missing


def _client_side(stack: LocalStack) -> str:
    """From the services' logs: how long each reconnect took (``nats.disconnected`` to
    ``nats.reconnected``), and how many settles could not be sent (left to redelivery) — what a pending
    buffer on the connection would have carried over (docs/nats.md)."""
    gaps, failed = [], collections.Counter[str]()
    for path in sorted((stack.data_dir / "logs").glob("*.log")):
        down = None
        for line in path.read_text(errors="replace").splitlines():
            if '"nats.' not in line:
                continue
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            if entry["event"] == "nats.disconnected":
                down = at
            elif entry["event"] == "nats.reconnected" and down is not None:
                gaps.append(at - down)
                down = None
            elif entry["event"] == "nats.settle_failed":
                failed[f"{path.stem} {entry['op']}"] += 1
    longest = f", longest {max(gaps) * 1000:.0f} ms" if gaps else ""
    return f"{len(gaps)} client reconnects{longest}; settles not sent: {dict(failed) or 0}"


def _pauses(load: Load, kills: list[Kill], kind: str) -> list[str]:
    """Per kill: how long intake of ``kind`` refused with 503 / 451, from the kill to the first acceptance
    after the last refusal (counted from the kill: a submission in flight then waits for its PubAck, and
    nothing is accepted either)."""
    out = []
    ends = [k.at for k in kills[1:]] + [float("inf")]
    for kill, end in zip(kills, ends, strict=True):
        mine = [a for a in load.attempts if a.kind == kind and kill.at <= a.at < end]
        refused = [a.at for a in mine if not a.ok]
        if not refused:
            out.append("none")
            continue
        back = min((a.at for a in mine if a.ok and a.at > refused[-1]), default=float("nan"))
        out.append(f"{back - kill.at:.1f}s ({len(refused)} refusals from +{refused[0] - kill.at:.1f}s "
                   f"to +{refused[-1] - kill.at:.1f}s)")
    return out


@pytest.mark.timeout(900)
async def test_every_service_rides_out_the_loss_of_each_stream_leader(
        cluster: NatsCluster, cluster_stack: LocalStack, smtp_sink: SmtpSink, receiver: Receiver) -> None:
    stack, load, kills = cluster_stack, Load(), list[Kill]()
    before = _pids(stack)
    assert all(before.values()), before
    async with _api(stack) as client:
        r = await client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["delivered"]})
        assert r.status_code == 201, r.text
        start = time.monotonic()
        stop = asyncio.Event()
        loading = asyncio.create_task(_run_load(stack, client, load, stop, "load"))
        try:
            await asyncio.sleep(SETTLE_S)
            await _kill_each_leader(cluster, kills)
        finally:
            stop.set()
            await loading
        during = len(load.accepted)
        # after every failover: new mail goes all the way (delivered, recorded, posted as a webhook)
        sentinels = Load()
        await asyncio.gather(*(_submit(stack, client, sentinels, n, "sentinel") for n in range(SENTINELS)))
        load.accepted.update(sentinels.accepted)
        accepted = load.accepted
        try:
            await eventually(lambda: set(_delivered(smtp_sink)) >= set(accepted), timeout=300, interval=0.5)
            await eventually(lambda: set(_webhooked(receiver)) >= set(accepted), timeout=300, interval=0.5)
            await eventually(lambda: _quiet(cluster), timeout=300, interval=1.0)
            missing = await _wait_recorded(client, list(accepted))
        finally:
            got = _delivered(smtp_sink)
            lost = sorted(set(accepted) - set(got))
            duplicated = {mid: n - 1 for mid, n in got.items() if n > 1}
            unknown = sorted(set(got) - set(accepted))
            hooks = _webhooked(receiver)
            for kill in kills:
                print(f"\nkilled {kill.victim} at +{kill.at - start:.1f}s, leader of {', '.join(kill.led)}; "
                      f"new leaders after {kill.elected - kill.at:.1f}s, restarted and caught up after "
                      f"{kill.whole - kill.at:.1f}s")
            print(f"intake pause, API 503: {'; '.join(_pauses(load, kills, 'api'))}")
            print(f"intake pause, SMTP 451: {'; '.join(_pauses(load, kills, 'smtp'))}")
            print(_client_side(stack))
            print(f"{during} accepted under load, {len(sentinels.accepted)} after; refused and retried "
                  f"{sum(load.refused.values())} {dict(load.refused)}; delivered {len(got)}, "
                  f"lost {len(lost)} {lost[:10]}, duplicated {sum(duplicated.values())} "
                  f"{sorted(duplicated)[:10]}, not accepted yet delivered {len(unknown)} {unknown[:10]}; "
                  f"webhooks {sum(hooks.values())} for {len(hooks)} messages")
    # no service exited: the same processes as before the first kill, none restarted by `postwire run`
    log = (stack.data_dir / "run.log").read_text().splitlines()
    assert ([line for line in log if "service.exited" in line], _pids(stack)) == ([], before)
    assert lost == [] and duplicated == {}
    # a copy nobody was told was accepted: only possible over SMTP, when a PubAck was lost after the
    # message was stored (the client got 451 and sent it again; SMTP has no idempotency key)
    assert set(unknown) <= _via_smtp(smtp_sink)
    assert missing == []  # the recorder stored every delivery


async def _wait_recorded(client: httpx.AsyncClient, ids: list[str]) -> list[str]:
    """Wait until the recorder has stored every message's delivery; the ids it has not (should be [])."""
    async def all_recorded() -> bool:
        return not await _recorded_delivered(client, ids)

    with contextlib.suppress(AssertionError):
        await eventually(all_recorded, timeout=120, interval=2.0)
    return await _recorded_delivered(client, ids)
