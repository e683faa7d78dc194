"""DMARC aggregate reports mailed to ``dmarc@<bounce domain>`` (docs/dmarc.md): read, stored for the
account that owns the report's domain, or dropped.

The order, and what the remote MTA is told: the mail is read by ``postwire.dmarc`` (in a thread: it may
be a 10 MiB archive); the account is the one whose sending domain is the report's domain or a parent of
it; the report and its records are committed in one transaction, stored once per (org_name, report_id),
and only then is DATA answered 250. While PostgreSQL cannot answer, DATA is answered 451 and the
reporter's MTA tries again later. A mail that is not an aggregate report, or a report about a domain no
account sends from, is answered 250 too and dropped, with a log line and a count: never bounced, since
the reporter's address is no one to send a bounce to (backscatter).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.bounce_receiver import metrics
from postwire.core import verp
from postwire.db import dmarc_reports
from postwire.dmarc import InvalidReport, parse_report

log = structlog.get_logger(__name__)

LOCAL_PART = "dmarc"
STORED = "250 2.0.0 Ok: DMARC report stored"
DUPLICATE = "250 2.0.0 Ok: DMARC report stored before"
UNKNOWN_DOMAIN = "250 2.0.0 Ok: no account sends from the report's domain, discarded"
NOT_A_REPORT = "250 2.0.0 Ok: not a DMARC aggregate report, discarded"

Stored = Literal["stored", "duplicate", "unknown_domain"]


class StoreUnavailable(Exception):
    """PostgreSQL could not store the report: the remote MTA must try again later (451)."""


class ReportStore(Protocol):
    """Stores a report (the pinned JSON shape) for the account owning its domain."""

    async def store(self, report: dict[str, Any]) -> tuple[Stored, str | None]: ...


@dataclass
class DbReportStore:
    """``postwire.db.dmarc_reports``: the owner of the domain, then the report, in one transaction."""

    sessions: async_sessionmaker[AsyncSession]
    timeout_s: float = 60.0  # a report of a million records takes a while to insert

    async def store(self, report: dict[str, Any]) -> tuple[Stored, str | None]:
        domain = dmarc_reports.report_domain(report)
        if domain is None:
            return "unknown_domain", None
        try:
            async with asyncio.timeout(self.timeout_s), self.sessions.begin() as session:
                account_id = await dmarc_reports.owner_of(session, domain)
                if account_id is None:
                    return "unknown_domain", None
                _, created = await dmarc_reports.store(session, account_id, report, domain)
        except (OperationalError, DBAPIError, OSError, TimeoutError) as e:
            raise StoreUnavailable(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        return ("stored" if created else "duplicate"), account_id


def is_report_address(address: str, bounce_domain: str) -> bool:
    """``dmarc@<bounce domain>``, the local part in any case."""
    local, _, domain = address.strip("<>").rpartition("@")
    try:
        on_domain = verp.normalise_domain(domain) == verp.normalise_domain(bounce_domain)
    except ValueError:
        return False
    return on_domain and local.lower() == LOCAL_PART


async def take_report(raw: bytes, reports: ReportStore) -> str:
    """Read and store the report in ``raw`` (a whole mail); the 250 reply saying what became of it.
    Raises StoreUnavailable when it could not be stored (answer 451)."""
    try:
        # untrusted archives of up to the size limit, inflated and parsed: off the loop
        report = await asyncio.to_thread(parse_report, raw, "message/rfc822")
        data = report.as_json()
        dmarc_reports.check_storable(data)
    except (InvalidReport, dmarc_reports.UnstorableReport) as exc:
        log.info("bounce.dmarc_discarded", why=exc.code, detail=exc.message, size=len(raw))
        metrics.DMARC_REPORTS.labels(exc.code).inc()
        return NOT_A_REPORT
    try:
        outcome, account_id = await reports.store(data)
    except StoreUnavailable:
        metrics.DMARC_REPORTS.labels("store_unavailable").inc()
        raise
    metrics.DMARC_REPORTS.labels(outcome).inc()
    if outcome == "unknown_domain":
        log.info("bounce.dmarc_discarded", why=outcome, domain=data["domain"], org_name=data["org_name"])
        return UNKNOWN_DOMAIN
    log.info("bounce.dmarc_stored", account_id=account_id, domain=data["domain"], org_name=data["org_name"],
             report_id=data["report_id"], records=len(data["records"]), duplicate=outcome == "duplicate")
    return STORED if outcome == "stored" else DUPLICATE
