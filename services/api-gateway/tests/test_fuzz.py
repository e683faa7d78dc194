"""Property-based fuzzing of every operation in the gateway's OpenAPI schema (schemathesis).

The real service (``serve``) runs with a real nats-server and the test PostgreSQL in a thread of its
own (schemathesis calls it synchronously over HTTP), authenticated as a real account. Checked for each
generated request, valid and invalid alike: no 5xx, and the status code, Content-Type and body are the
ones the schema documents for the operation.

Short by default (part of ``make test``); the long form:
``POSTWIRE_FUZZ_EXAMPLES=500 uv run pytest services/api-gateway/tests/test_fuzz.py``. The seed is fixed
(``POSTWIRE_FUZZ_SEED`` changes it) and Hypothesis' example database is off, so a run is reproducible.

The account has one of everything (a message's status, events of every type, a domain, a suppression, a
webhook with dead letters, an archived message), and half the generated requests of the operations that
read or change one item are pointed at the existing one (the resend and webhook bodies at a working
id and URL), so 200 answers with real data are checked against the schema too.

Nothing leaves the machine: messages are only queued on the test's INBOUND stream (nothing consumes it),
and name resolution is limited to numeric addresses for the run, so a fuzzed webhook URL is refused as
"does not resolve" instead of being looked up on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import nats
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from postwire.api_gateway.service import serve
from postwire.api_gateway.settings import ApiSettings
from postwire.api_gateway.smtpeter import recipient_ids
from postwire.core.archive import archive
from postwire.core.bodies import BodyStore
from postwire.core.events import EVENT_TYPES, make_event
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import Topology
from postwire.db import suppressions, webhooks
from postwire.db.accounts import NewCredentials, create_account
from postwire.db.domains import add_domain
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Message, Recipient, WebhookDeadLetter
from postwire.testing.nats import NatsServer
from postwire.v1 import envelope_pb2

from .conftest import event_row, offline_app

EXAMPLES = int(os.environ.get("POSTWIRE_FUZZ_EXAMPLES", "12"))
SEED = int(os.environ.get("POSTWIRE_FUZZ_SEED", "20261126"))
TAG = "fuzzed"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@dataclass
class Target:
    base_url: str
    creds: NewCredentials
    pinned: dict[tuple[str, str], tuple[str, str]]  # (method, path) -> (path parameter, existing value)
    body_pins: dict[tuple[str, str], tuple[str, str]]  # (method, path) -> (body field, working value)


_real_getaddrinfo = socket.getaddrinfo


def _numeric_only(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                  flags: int = 0) -> Any:
    """getaddrinfo that never asks DNS: names fail like an unknown host, addresses resolve."""
    return _real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)


async def _seed(pg_url: str) -> tuple[NewCredentials, dict[tuple[str, str], tuple[str, str]]]:
    """An account with one of everything, so the fuzzer also gets 200s with real data to check against
    the schema: a message's status, events of every type, a domain, a suppression, a webhook with dead
    letters. Returns the account and, per operation, the path parameter to point at the existing item."""
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            creds = await create_account(s, f"fuzz-{uuid.uuid4().hex[:8]}", allow_unverified_from=True)
            aid, mid, at = creds.account_id, new_message_id(), datetime.now(UTC) - timedelta(hours=1)
            s.add(Message(id=mid, account_id=aid, mail_from="a@example.com", subject="s", size=10,
                          source="api", tags=[TAG], metadata_={"k": "v"}))
            s.add(Recipient(message_id=mid, address="r@example.org", account_id=aid, status="delivered",
                            smtp_code=250, enhanced_status="2.0.0", response="250 ok",
                            mx_host="mx.example.org", attempts=1, updated_at=at))
            for type_ in EVENT_TYPES:
                ev = make_event(type_, account_id=aid, message_id=mid, recipient="r@example.org", tags=[TAG],
                                metadata={"k": "v"}, smtp_code=550, reason="userunknown", url="https://x.test/")
                ev.at.FromDatetime(at)
                await s.execute(event_row(ev))
            domain = (await add_domain(s, aid, f"fuzz-{uuid.uuid4().hex[:8]}.example", "ed25519-sha256")).name
            await suppressions.add(s, aid, "kept@example.org", "manual", "manual")
            hook = await webhooks.create_webhook(s, aid, "https://1.1.1.1/fuzz", [])
            for i in range(3):
                s.add(WebhookDeadLetter(id=new_id("dl_"), webhook_id=hook.id, account_id=aid,
                                        event_id=f"{mid}.bounced.{i}.r@example.org",
                                        payload={"type": "bounced"}, last_error="HTTP 500", attempts=5,
                                        created_at=at, parked_at=at))
    finally:
        await engine.dispose()
    pinned = {("GET", "/v1/messages/{message_id}"): ("message_id", mid),
              ("GET", "/v1/domains/{name}"): ("name", domain),
              ("PATCH", "/v1/domains/{name}"): ("name", domain),
              ("GET", "/v1/suppressions/{address}"): ("address", "kept@example.org"),
              ("GET", "/v1/webhooks/{webhook_id}"): ("webhook_id", hook.id),
              ("GET", "/v1/webhooks/{webhook_id}/dead-letters"): ("webhook_id", hook.id),
              ("POST", "/v1/webhooks/{webhook_id}/dead-letters/replay"): ("webhook_id", hook.id),
              ("GET", "/v1/stats/{tag}"): ("tag", TAG)}
    return creds, pinned


async def _archive(nats_url: str, account_id: str) -> str:
    """A message in the resend archive, as the dispatcher stores it; its id."""
    mid = new_message_id()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await Topology().apply(js)
        raw = b"From: a@example.com\r\nTo: r@example.org\r\nSubject: s\r\n\r\nbody\r\n"
        stored = envelope_pb2.InboundMessage(
            message_id=mid, account_id=account_id, mail_from="a@example.com",
            recipients=["r@example.org", "s@example.org"], source="api", subject="s", tags=[TAG],
            recipient_ids=recipient_ids(mid, ["r@example.org", "s@example.org"]))
        stored.body.CopyFrom(await BodyStore(js, 1 << 20).put(f"{mid}/original", raw))
        await archive(js, stored)
    finally:
        await nc.close()
    return mid


async def _run(pg_url: str, store: Path, started: Any, holder: dict[str, Any]) -> None:
    stop = asyncio.Event()
    holder["loop"] = asyncio.get_running_loop()
    holder["stop"] = stop
    creds, pinned = await _seed(pg_url)
    async with NatsServer(store / "jetstream") as nats_server:
        archived = await _archive(nats_server.url, creds.account_id)
        body_pins = {("POST", "/v1/resend"): ("message", archived),
                     ("POST", "/v1/webhooks"): ("url", "https://1.1.1.1/fuzzed")}
        settings = ApiSettings(nats_url=nats_server.url, database_url=pg_url, http_port=0,
                               data_dir=store / "data", message_id_domain="fuzz.postwire.test",
                               publish_timeout_s=2.0)
        await serve(settings, stop, started=lambda port: started(Target(f"http://127.0.0.1:{port}", creds,
                                                                        pinned, body_pins)))


@pytest.fixture(scope="module")
def fuzz_target(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The gateway, serving in a thread with its own event loop until the module's tests are done."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def started(target: Target) -> None:
        holder["target"] = target
        ready.set()

    def main() -> None:
        try:
            asyncio.run(_run(pg_url, tmp_path_factory.mktemp("fuzz"), started, holder))
        except BaseException as e:
            holder["error"] = e
            ready.set()

    with mock.patch.object(socket, "getaddrinfo", _numeric_only):
        thread = threading.Thread(target=main, name="fuzz-gateway", daemon=True)
        thread.start()
        assert ready.wait(120), "the gateway did not start"
        if "error" in holder:
            raise holder["error"]
        try:
            yield holder["target"]
        finally:
            holder["loop"].call_soon_threadsafe(holder["stop"].set)
            thread.join(30)
        assert "error" not in holder, holder.get("error")


# the app's OpenAPI document; test_the_fuzzed_schema_is_the_served_one checks it is what is served
SCHEMA = offline_app().openapi()
# a raw message is bytes like any other binary body
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")
schema = schemathesis.openapi.from_dict(SCHEMA, config=schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
}))


def test_the_fuzzed_schema_is_the_served_one(fuzz_target: Target) -> None:
    assert httpx.get(f"{fuzz_target.base_url}/openapi.json").json() == SCHEMA


@schema.parametrize()
def test_every_operation_fuzzed(case: Case, fuzz_target: Target) -> None:
    with contextlib.suppress(KeyError, TypeError):
        case.query.pop("access_token")  # the header authenticates; a fuzzed query token would not
    pin = fuzz_target.pinned.get((case.method.upper(), case.path))
    half = zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode()) % 2  # deterministic
    if pin is not None and case.path_parameters and half:
        case.path_parameters[pin[0]] = pin[1]  # half the cases: an item that exists
    body_pin = fuzz_target.body_pins.get((case.method.upper(), case.path))
    if body_pin is not None and isinstance(case.body, dict) and half:
        case.body[body_pin[0]] = body_pin[1]  # half the cases: a value that can work (resend, webhook URL)
    case.call_and_validate(base_url=fuzz_target.base_url, checks=CHECKS,
                           headers={"Authorization": f"Bearer {fuzz_target.creds.api_key}"}, timeout=30)
