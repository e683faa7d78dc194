"""Stored DMARC aggregate reports (docs/dmarc.md): store once, list newest first, sum up per source IP.

A report arrives as the JSON ``postwire.dmarc`` gives (``AggregateReport.as_json()``), through the API or
the bounce receiver's ``dmarc@`` address; both call :func:`store` with the account that owns the report's
domain (:func:`owner_of`, :func:`sends_for`). The reporter's ``(org_name, report_id)`` names a report, so
storing it again, for the same account, finds the stored one (``created`` False) and writes nothing.

Which reports an account may store: those about one of its sending domains or about a subdomain of one
(the closest registered parent decides, as for DKIM signing). A report about a parent of a sending domain
is not the account's: it covers every other subdomain of that parent too.

The summary is computed in SQL over ``dmarc_records``: one ``GROUP BY source_ip`` over the rows of the
reports whose date range overlaps the window; nothing is loaded into Python per report.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Select, and_, func, insert, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.db.domains import InvalidDomain, normalise_name, parent_names
from postwire.db.models import DmarcRecord, DmarcReport, Domain

MAX_PAGE: Final = 100
INSERT_BATCH: Final = 2000  # records per INSERT: a 1,000,000-record report is 500 statements
DISPOSITIONS: Final = ("none", "quarantine", "reject")
# column widths (models.DmarcReport / DmarcRecord): longer values are refused, not cut
_WIDTHS: Final = {"org_name": 255, "org_email": 320, "report_id": 255}
_RECORD_WIDTHS: Final = {"source_ip": 45, "disposition": 32, "dkim": 32, "spf": 32, "header_from": 255}


class UnstorableReport(ValueError):
    """A report that parsed but cannot be stored as it is (a field longer than its column)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Cursor:
    """Where a page of the newest-first listing ended: the last report's end date and id."""

    end: datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.end.astimezone(UTC).isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            end, _, ident = raw.partition("|")
            moment = datetime.fromisoformat(end)
            if moment.tzinfo is None:
                raise ValueError("no offset")
            return cls(moment, int(ident))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise ValueError("not a cursor this listing returned") from None


def report_domain(report: dict[str, Any]) -> str | None:
    """The report's domain (policy_published) as the domains table writes names; None when it is not a
    host name at all."""
    try:
        return normalise_name(str(report["domain"]))
    except InvalidDomain:
        return None


def check_storable(report: dict[str, Any]) -> None:
    """Raise :class:`UnstorableReport` for a value wider than its column (a hostile or broken report)."""
    for key, width in _WIDTHS.items():
        if len(report[key]) > width:
            raise UnstorableReport("invalid_field", f"{key} is longer than {width} characters")
    for n, record in enumerate(report["records"]):
        for key, width in _RECORD_WIDTHS.items():
            if len(record[key]) > width:
                raise UnstorableReport("invalid_field",
                                       f"record {n}: {key} is longer than {width} characters")


async def owner_of(session: AsyncSession, domain: str) -> str | None:
    """The account whose sending domain ``domain`` is, or is a subdomain of (closest parent wins)."""
    rows = (await session.execute(select(Domain.name, Domain.account_id)
                                  .where(Domain.name.in_(parent_names(domain))))).all()
    return max(rows, key=lambda r: len(r.name)).account_id if rows else None


async def sends_for(session: AsyncSession, account_id: str, domain: str) -> bool:
    """Whether ``domain`` is a sending domain of the account, or a subdomain of one of them. Domain names
    are unique across accounts, so the closest registered parent must be the account's."""
    return await owner_of(session, domain) == account_id


async def store(session: AsyncSession, account_id: str, report: dict[str, Any],
                domain: str) -> tuple[int, bool]:
    """Store ``report`` (the pinned JSON shape) for the account under ``domain`` (:func:`report_domain`):
    (its id, True), or the id of the same report stored before and False. Call it in a transaction: the
    report and its records are committed together, and a concurrent store of the same report waits on
    the unique index, then finds this one."""
    check_storable(report)
    inserted = await session.scalar(
        pg_insert(DmarcReport)
        .values(account_id=account_id, domain=domain, org_name=report["org_name"],
                org_email=report["org_email"], report_id=report["report_id"],
                begin=_moment(report["begin"]), end=_moment(report["end"]), policy=report["policy"])
        .on_conflict_do_nothing(index_elements=["account_id", "org_name", "report_id"])
        .returning(DmarcReport.id))
    if inserted is None:
        existing = await session.scalar(select(DmarcReport.id).where(
            DmarcReport.account_id == account_id, DmarcReport.org_name == report["org_name"],
            DmarcReport.report_id == report["report_id"]))
        assert existing is not None  # the conflict was with a committed row, which is never deleted here
        return existing, False
    records = report["records"]
    for start in range(0, len(records), INSERT_BATCH):
        await session.execute(insert(DmarcRecord), [
            {"report_id": inserted, "position": start + n, "source_ip": r["source_ip"], "count": r["count"],
             "disposition": r["disposition"], "dkim": r["dkim"], "spf": r["spf"],
             "header_from": r["header_from"], "dkim_results": r["dkim_results"],
             "spf_results": r["spf_results"]}
            for n, r in enumerate(records[start:start + INSERT_BATCH])])
    return inserted, True


async def get(session: AsyncSession, account_id: str, ident: int) -> dict[str, Any] | None:
    """One stored report of the account in the API's shape (with ``id``), or None."""
    found = await _with_records(session, select(DmarcReport).where(
        DmarcReport.account_id == account_id, DmarcReport.id == ident))
    return found[0] if found else None


async def list_page(session: AsyncSession, account_id: str, domain: str | None, after: Cursor | None,
                    limit: int) -> list[dict[str, Any]]:
    """A page of the account's reports (about ``domain`` when given), newest first: by end date, then
    id; ``after`` is where the previous page ended."""
    stmt = select(DmarcReport).where(DmarcReport.account_id == account_id)
    if domain is not None:
        stmt = stmt.where(DmarcReport.domain == domain)
    if after is not None:
        stmt = stmt.where(tuple_(DmarcReport.end, DmarcReport.id) < tuple_(after.end, after.id))
    return await _with_records(session, stmt.order_by(DmarcReport.end.desc(), DmarcReport.id.desc())
                               .limit(limit))


async def summary(session: AsyncSession, account_id: str, domain: str, start: datetime,
                  end: datetime) -> list[dict[str, Any]]:
    """Per source IP, over the records of the account's reports about ``domain`` whose date range
    overlaps [start, end): messages, the aligned DKIM and SPF passes, DMARC passes (either aligned
    mechanism passed) and the receivers' dispositions. Most messages first, then by address."""
    count = DmarcRecord.count

    def total(*where: Any) -> Any:
        return func.coalesce(func.sum(count).filter(*where), 0)

    messages = func.sum(count).label("messages")
    stmt = (select(DmarcRecord.source_ip, messages, total(DmarcRecord.dkim == "pass").label("dkim_pass"),
                   total(DmarcRecord.spf == "pass").label("spf_pass"),
                   total(or_(DmarcRecord.dkim == "pass", DmarcRecord.spf == "pass")).label("dmarc_pass"),
                   *(total(DmarcRecord.disposition == d).label(d) for d in DISPOSITIONS))
            .join(DmarcReport, DmarcReport.id == DmarcRecord.report_id)
            .where(DmarcReport.account_id == account_id, DmarcReport.domain == domain,
                   DmarcReport.begin < end, DmarcReport.end > start)
            .group_by(DmarcRecord.source_ip)
            .order_by(messages.desc(), DmarcRecord.source_ip))
    return [{"source_ip": r.source_ip, "messages": int(r.messages), "dkim_pass": int(r.dkim_pass),
             "spf_pass": int(r.spf_pass), "dmarc_pass": int(r.dmarc_pass),
             "dispositions": {d: int(getattr(r, d)) for d in DISPOSITIONS}}
            for r in (await session.execute(stmt)).all()]


async def received_days(session: AsyncSession, account_id: str) -> list[date]:
    """The days (UTC) on which the account received reports, oldest first (SMTPeter's ``/v1/dmarc``)."""
    day = func.date(func.timezone("UTC", DmarcReport.received_at))
    rows = await session.scalars(select(day).where(DmarcReport.account_id == account_id).distinct()
                                 .order_by(day))
    return list(rows)


async def of_day(session: AsyncSession, account_id: str, day: date, reporter: str,
                 domain: str) -> list[dict[str, Any]]:
    """The account's reports about ``domain`` from ``reporter`` for ``day`` (SMTPeter's
    ``/v1/dmarc/{date}/{from}/{for}``), oldest first. A report is of a day when it was received that day
    (UTC) or its date range overlaps it; it is from ``reporter`` when that is its org_name (any case), the
    domain of its org_email, or a parent of that domain (``yahoo.com`` for ``dmarc.yahoo.com``)."""
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hi = lo + timedelta(days=1)
    email_domain = func.lower(func.split_part(DmarcReport.org_email, "@", 2))
    reporter = reporter.lower()
    stmt = (select(DmarcReport)
            .where(DmarcReport.account_id == account_id, DmarcReport.domain == domain,
                   or_(func.lower(DmarcReport.org_name) == reporter, email_domain == reporter,
                       email_domain.endswith("." + reporter, autoescape=True)),
                   or_(and_(DmarcReport.received_at >= lo, DmarcReport.received_at < hi),
                       and_(DmarcReport.begin < hi, DmarcReport.end > lo)))
            .order_by(DmarcReport.begin, DmarcReport.id))
    return await _with_records(session, stmt)


async def _with_records(session: AsyncSession, stmt: Select[DmarcReport]) -> list[dict[str, Any]]:
    reports: Sequence[DmarcReport] = (await session.scalars(stmt)).all()
    if not reports:
        return []
    records: dict[int, list[dict[str, Any]]] = {r.id: [] for r in reports}
    rows = await session.scalars(select(DmarcRecord).where(DmarcRecord.report_id.in_(list(records)))
                                 .order_by(DmarcRecord.report_id, DmarcRecord.position))
    for rec in rows:
        records[rec.report_id].append({
            "source_ip": rec.source_ip, "count": rec.count, "disposition": rec.disposition, "dkim": rec.dkim,
            "spf": rec.spf, "header_from": rec.header_from, "dkim_results": rec.dkim_results,
            "spf_results": rec.spf_results})
    return [{"id": r.id, "org_name": r.org_name, "org_email": r.org_email, "report_id": r.report_id,
             "begin": iso_utc(r.begin), "end": iso_utc(r.end), "domain": r.domain, "policy": r.policy,
             "records": records[r.id]} for r in reports]


def iso_utc(moment: datetime) -> str:
    """``2018-10-01T00:00:00Z``: the form of the report's dates in the API (as postwire.dmarc writes them)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
