"""Faults under load on the local run: nothing accepted is ever lost (docs/reliability.md).

Clients submit uniquely numbered messages over SMTP (AUTH) and the REST API while each component is
killed in turn — SIGKILL (a crash) or SIGTERM (a rolling restart) — and `postwire run` restarts it like
a Kubernetes restartPolicy. A client retries what was not accepted, as real clients do; an id counts as
accepted once it got a 250 or a 202. At the end every accepted id must arrive at the loopback MX: lost = 0.
Duplicates are counted and reported, not forbidden (delivery is at least once).

The short form runs in `make test`; `make chaos` (POSTWIRE_CHAOS_MESSAGES, POSTWIRE_CHAOS_ROUNDS) is the
long one, and writes its figures to <data dir>/chaos-report.json and the test log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import httpx
import psutil
import pytest
import pytest_asyncio

from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink
from postwire.testing.stack import LocalStack

pytestmark = pytest.mark.slow  # the whole system, killed under load

MESSAGES = int(os.environ.get("POSTWIRE_CHAOS_MESSAGES", "240"))
ROUNDS = int(os.environ.get("POSTWIRE_CHAOS_ROUNDS", "1"))
CLIENTS = 6  # per protocol
# seconds a kill-and-come-back takes, roughly: the clients spread their messages over the whole schedule
KILL_CYCLE_S = 8.0
VICTIMS = ("dispatcher", "transformer", "ingest-smtp", "api-gateway", "recorder", "nats")
DEST = "chaos.test"
ID = re.compile(rb"^X-Chaos-Id: (\S+)", re.MULTILINE)
HTML = ("<html><head><style>p {{ color: #336699; }}</style></head>"
        "<body><p>Chaos message {n}</p></body></html>")


@pytest_asyncio.fixture
async def stack(tmp_path: Path, dns_server: DnsServer, sink: SmtpSink) -> AsyncIterator[LocalStack]:
    dns_server.add_mail_domain(DEST)
    run = LocalStack(tmp_path / "run", dns_server.nameserver, sink.port,
                     extra_env={"POSTWIRE_RETRY_BASE_S": "0.5", "POSTWIRE_RETRY_MAX_S": "2",
                                # restart quickly: the test waits for every component to come back
                                "POSTWIRE_RESTART_BACKOFF_MAX_S": "2", "POSTWIRE_SHUTDOWN_GRACE_S": "10"})
    await run.start()
    yield run
    assert await run.stop() == 0


@dataclass
class Tally:
    accepted: set[str] = field(default_factory=set)
    refusals: Counter[str] = field(default_factory=Counter)
    kills: list[str] = field(default_factory=list)


def _pace(per_client: int) -> float:
    """Pause between one client's messages, so the load lasts as long as the kill schedule."""
    return len(VICTIMS) * ROUNDS * KILL_CYCLE_S / max(1, per_client)


async def _smtp_client(stack: LocalStack, ids: list[str], tally: Tally) -> None:
    demo = stack.demo()
    for mid in ids:
        await asyncio.sleep(_pace(len(ids)))
        raw = (f"From: chaos@example.test\r\nTo: r@{DEST}\r\nSubject: chaos {mid}\r\nX-Chaos-Id: {mid}\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
               f"{HTML.format(n=mid)}\r\n").encode()
        while True:
            try:
                async with aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False,
                                           timeout=30) as smtp:
                    await smtp.login(demo["smtp_username"], demo["smtp_password"])
                    await smtp.sendmail("chaos@example.test", [f"r@{DEST}"], raw)
                tally.accepted.add(mid)
                break
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
                tally.refusals[f"smtp {type(e).__name__}"] += 1
                await asyncio.sleep(0.3)


async def _api_client(stack: LocalStack, ids: list[str], tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {stack.demo()['api_key']}"}
    async with httpx.AsyncClient(base_url=stack.api, headers=headers, timeout=30) as client:
        for mid in ids:
            await asyncio.sleep(_pace(len(ids)))
            body = {"from": "chaos@example.test", "to": [f"r@{DEST}"], "subject": f"chaos {mid}",
                    "html": HTML.format(n=mid), "headers": {"X-Chaos-Id": mid},
                    "options": {"inline_css": True}}
            while True:
                try:
                    r = await client.post("/v1/messages", json=body, headers={"Idempotency-Key": mid})
                except httpx.HTTPError as e:
                    tally.refusals[f"api {type(e).__name__}"] += 1
                    await asyncio.sleep(0.3)
                    continue
                if r.status_code == 202:
                    tally.accepted.add(mid)
                    break
                tally.refusals[f"api {r.status_code}"] += 1
                await asyncio.sleep(0.3)


async def _kill_in_turn(stack: LocalStack, sig: signal.Signals, tally: Tally) -> None:
    """Each component in turn, while the clients are sending; wait until it is back each time."""
    for _ in range(ROUNDS):
        for victim in VICTIMS:
            await asyncio.sleep(1.0)
            procs = stack.processes(victim)
            assert procs, f"no {victim} process found"
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(sig)
            tally.kills.append(victim)
            old = {p.pid for p in procs}
            try:
                await eventually(lambda v=victim, o=old: _back(stack, v, o), timeout=90)
            except AssertionError as e:
                raise AssertionError(f"{victim} ({sig.name}, kill {len(tally.kills)}) not back in 90 s; "
                                     f"see {stack.data_dir}/logs") from e


async def _back(stack: LocalStack, victim: str, old: set[int]) -> bool:
    fresh = [p for p in stack.processes(victim) if p.pid not in old]
    return bool(fresh) and await stack.ready()


def _arrived(sink: SmtpSink) -> Counter[str]:
    seen: Counter[str] = Counter()
    for received in sink.handler.received:
        m = ID.search(received.data)
        if m is not None:
            seen[m.group(1).decode()] += 1
    return seen


@pytest.mark.timeout(300 + 60 * ROUNDS * len(VICTIMS) + MESSAGES // 10)  # the long form runs longer
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "rolling-restart"])
async def test_killing_each_component_under_load_loses_nothing(stack: LocalStack, sink: SmtpSink,
                                                               sig: signal.Signals) -> None:
    tally = Tally()
    ids = [f"c{n:06d}" for n in range(MESSAGES)]
    smtp_ids, api_ids = ids[: MESSAGES // 2], ids[MESSAGES // 2:]
    clients = [_smtp_client(stack, smtp_ids[i::CLIENTS], tally) for i in range(CLIENTS)]
    clients += [_api_client(stack, api_ids[i::CLIENTS], tally) for i in range(CLIENTS)]
    await asyncio.gather(*clients, _kill_in_turn(stack, sig, tally))
    assert tally.accepted == set(ids)  # the clients retried until everything was accepted

    async def all_arrived() -> bool:
        return set(_arrived(sink)) >= tally.accepted

    await eventually(all_arrived, timeout=240)
    seen = _arrived(sink)
    lost = sorted(tally.accepted - set(seen))
    duplicates = sum(n - 1 for n in seen.values())
    twice = sorted(mid for mid, n in seen.items() if n > 1)
    report = {"signal": sig.name, "messages": MESSAGES, "kills": tally.kills, "lost": len(lost),
              "duplicates": duplicates, "duplicate_rate": duplicates / MESSAGES,
              # submitted over SMTP or the API: an SMTP client that lost the connection after the
              # message was queued sends it again (SMTP has no idempotency key); the API's retries are
              # deduplicated by Idempotency-Key, so its duplicates come from the dispatcher's window
              "duplicated_smtp": sum(1 for mid in twice if mid in set(smtp_ids)),
              "duplicated_api": sum(1 for mid in twice if mid in set(api_ids)),
              "refusals_retried": dict(tally.refusals)}
    (stack.data_dir / "chaos-report.json").write_text(json.dumps(report, indent=2))
    print("chaos report:", json.dumps(report))
    assert lost == []
    assert tally.kills == list(VICTIMS) * ROUNDS
