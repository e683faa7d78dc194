"""DMARC aggregate reports mailed to dmarc@<bounce domain>, end to end: the receiver (serve(), on a
loopback port) with a real nats-server and PostgreSQL, real SMTP clients (aiosmtplib). A report is
stored for the account that owns its domain before the 250; what is no report, or about nobody's
domain, is answered 250 and dropped (never bounced); while the store fails the answer is 451."""

from __future__ import annotations

import asyncio
import gzip
import io
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import aiosmtplib
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from postwire.bounce_receiver import dmarc_mail
from postwire.bounce_receiver.receiver import (
    BounceHandler,
    BounceListener,
    DbOriginals,
    ReceiverConfig,
    start_receiver,
)
from postwire.bounce_receiver.service import serve
from postwire.bounce_receiver.settings import ReceiverSettings
from postwire.db.accounts import create_account
from postwire.db.domains import add_domain
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import DmarcRecord, DmarcReport
from postwire.testing.nats import NatsServer

SECRET = "bounce-receiver-tests-secret-0123456789"
DOMAIN = "bounces.postwire.test"
FAILURE_REPORT = Path(__file__).parents[3] / "libs" / "dmarc" / "tests" / "fixtures" / "failure-report.eml"

Start = Callable[[], Awaitable[BounceListener]]


@pytest_asyncio.fixture
async def receiver(nats_server: NatsServer, pg_url: str) -> AsyncIterator[Start]:
    """``serve()`` in-process, on port 0; stopped at teardown."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start() -> BounceListener:
        settings = ReceiverSettings(nats_url=nats_server.url, database_url=pg_url, bounce_smtp_port=0,
                                    verp_secret=SECRET, bounce_domain=DOMAIN, shutdown_grace_s=2)
        bound: asyncio.Future[BounceListener] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop, receiver_started=bound.set_result))
        stops.append((stop, task))
        return await asyncio.wait_for(bound, 30)

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, 30)


async def owner(pg_url: str, *domains: str) -> str:
    """A new account sending from ``domains``; its id."""
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            creds = await create_account(s, f"dmarc-{uuid.uuid4().hex[:10]}")
            for name in domains:
                await add_domain(s, creds.account_id, name, algorithm="ed25519-sha256")
        return creds.account_id
    finally:
        await engine.dispose()


async def stored(pg_url: str, account_id: str) -> list[tuple[str, str, str, int]]:
    """(domain, org_name, report_id, record count) of the account's stored reports."""
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as s:
            rows = await s.execute(
                select(DmarcReport.domain, DmarcReport.org_name, DmarcReport.report_id,
                       func.count(DmarcRecord.position))
                .outerjoin(DmarcRecord, DmarcRecord.report_id == DmarcReport.id)
                .where(DmarcReport.account_id == account_id)
                .group_by(DmarcReport.id).order_by(DmarcReport.id))
            return [tuple(r) for r in rows.all()]  # type: ignore[misc]
    finally:
        await engine.dispose()


def report_xml(domain: str, report_id: str) -> bytes:
    return f"""<?xml version="1.0"?>
<feedback>
  <report_metadata><org_name>google.com</org_name><email>noreply-dmarc-support@google.com</email>
    <report_id>{report_id}</report_id><date_range><begin>1793491200</begin><end>1793577599</end></date_range>
  </report_metadata>
  <policy_published><domain>{domain}</domain><p>none</p></policy_published>
  <record><row><source_ip>192.0.2.1</source_ip><count>3</count>
    <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>{domain}</header_from></identifiers>
    <auth_results><spf><domain>{domain}</domain><result>pass</result></spf></auth_results></record>
  <record><row><source_ip>198.51.100.9</source_ip><count>1</count>
    <policy_evaluated><disposition>none</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>{domain}</header_from></identifiers>
    <auth_results><spf><domain>{domain}</domain><result>fail</result></spf></auth_results></record>
</feedback>""".encode()


def report_mail(domain: str, report_id: str, container: str = "gzip") -> bytes:
    """The mail a reporter sends: a short text and the report attached (gzip or zip)."""
    xml = report_xml(domain, report_id)
    mail = EmailMessage()
    mail["From"] = "noreply-dmarc-support@google.com"
    mail["To"] = f"dmarc@{DOMAIN}"
    mail["Subject"] = f"Report domain: {domain} Submitter: google.com Report-ID: {report_id}"
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@google.com>"
    mail.set_content("This is an aggregate report from Google.")
    name = f"google.com!{domain}!1793491200!1793577599"
    if container == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{name}.xml", xml)
        mail.add_attachment(buffer.getvalue(), maintype="application", subtype="zip", filename=f"{name}.zip")
    else:
        mail.add_attachment(gzip.compress(xml), maintype="application", subtype="gzip",
                            filename=f"{name}.xml.gz")
    return mail.as_bytes()


async def deliver(port: int, rcpt: str, raw: bytes) -> aiosmtplib.SMTPResponse:
    """One SMTP transaction from the null sender (as report senders often use); the reply to DATA."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as smtp:
        await smtp.mail("")
        await smtp.rcpt(rcpt)
        return await smtp.data(raw)


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("postwire_bounce_dmarc_reports_total", {"outcome": outcome}) or 0.0


def unique_domain() -> str:
    return f"d{uuid.uuid4().hex[:12]}.example"


@pytest.mark.parametrize("container", ["gzip", "zip"])
async def test_a_mailed_report_is_stored_for_the_domains_account_once(receiver: Start, pg_url: str,
                                                                      container: str) -> None:
    domain = unique_domain()
    account_id = await owner(pg_url, domain)
    listener = await receiver()
    raw = report_mail(f"mail.{domain}", "r-1", container)  # a subdomain of the sending domain
    before = counted("stored")

    reply = await deliver(listener.port, f"DMARC@{DOMAIN.upper()}", raw)  # any case
    again = await deliver(listener.port, f"dmarc@{DOMAIN}", raw)

    assert (reply.code, f"{reply.code} {reply.message}") == (250, dmarc_mail.STORED)
    assert (again.code, f"{again.code} {again.message}") == (250, dmarc_mail.DUPLICATE)
    assert await stored(pg_url, account_id) == [(f"mail.{domain}", "google.com", "r-1", 2)]
    assert counted("stored") == before + 1


@pytest.mark.parametrize(("name", "expected", "outcome"), [
    ("unknown domain", dmarc_mail.UNKNOWN_DOMAIN, "unknown_domain"),
    ("plain mail", dmarc_mail.NOT_A_REPORT, "no_report_attachment"),
    ("failure report", dmarc_mail.NOT_A_REPORT, "failure_report"),
])
async def test_what_is_no_report_of_an_account_is_dropped_not_bounced(
        receiver: Start, pg_url: str, name: str, expected: str, outcome: str) -> None:
    bystander = await owner(pg_url, unique_domain())
    listener = await receiver()
    plain = EmailMessage()
    plain["From"], plain["To"], plain["Subject"] = "someone@example.org", f"dmarc@{DOMAIN}", "Hello"
    plain.set_content("Is this the right address for DMARC questions?")
    raw = {"unknown domain": report_mail(unique_domain(), "r-unknown"),
           "plain mail": plain.as_bytes(),
           "failure report": FAILURE_REPORT.read_bytes()}[name]
    before = counted(outcome)

    reply = await deliver(listener.port, f"dmarc@{DOMAIN}", raw)

    assert f"{reply.code} {reply.message}" == expected
    assert counted(outcome) == before + 1
    assert await stored(pg_url, bystander) == []


async def test_dmarc_at_another_domain_is_refused_at_rcpt(receiver: Start) -> None:
    listener = await receiver()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port, timeout=30) as smtp:
        await smtp.mail("")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("dmarc@elsewhere.example")
    assert refused.value.code == 550


class UnavailableStore:
    async def store(self, report: dict[str, Any]) -> tuple[dmarc_mail.Stored, str | None]:
        raise dmarc_mail.StoreUnavailable("connection refused")


async def test_a_report_that_cannot_be_stored_is_a_451_and_nats_is_not_needed(pg_url: str) -> None:
    """The reporter's MTA keeps the report and retries; a report never needs the queue."""
    engine = make_engine(pg_url)
    handler = BounceHandler(config=ReceiverConfig(DOMAIN, SECRET.encode()),
                            originals=DbOriginals(make_sessionmaker(engine)), js=cast(Any, None),
                            queue_connected=lambda: False, reports=UnavailableStore())
    listener = await start_receiver(handler, host="127.0.0.1", port=0, hostname=DOMAIN,
                                    max_message_size=10 * 1024 * 1024, timeout_s=30)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await deliver(listener.port, f"dmarc@{DOMAIN}", report_mail(unique_domain(), "r-451"))
        assert refused.value.code == 451
    finally:
        await listener.drain(1)
        await engine.dispose()
