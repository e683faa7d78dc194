"""/v1/dmarc: DMARC aggregate reports about the account's sending domains (docs/dmarc.md).

POST /v1/dmarc/reports
    The report as the body (XML, gzip, zip or a whole report mail, up to 10 MiB as sent): read by
    ``postwire.dmarc`` (in a thread when large), refused with a 422 naming the parser's code, or with
    ``unknown_domain`` when its domain is not a sending domain of the account (nor a subdomain of one).
    Stored once per account and (org_name, report_id): 201 with the stored report the first time, 200
    with the stored one (not the new body) every time after.
GET /v1/dmarc/reports?domain=
    The account's reports, newest first (end date, then id), a page at a time.
GET /v1/dmarc/summary?domain=&start=&end=
    Per source IP over the reports whose dates overlap [start, end), summed in SQL.
GET /v1/dmarc, GET /v1/dmarc/{date}/{reporter}/{domain}[/{index}]
    SMTPeter's calls: the days reports were received, and one report as XML.

Every route reads and writes only the caller's account's reports.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Final
from xml.etree import ElementTree

import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from postwire.api_gateway import metrics, offload
from postwire.api_gateway.accept import deps_of
from postwire.api_gateway.auth import Account
from postwire.api_gateway.errors import FieldError, InvalidInput, ValidationErrorBody, responses
from postwire.api_gateway.request_limits import LimitFor
from postwire.api_gateway.schemas import datetime_in_range
from postwire.db import dmarc_reports as store
from postwire.db.domains import InvalidDomain, normalise_name
from postwire.dmarc import DEFAULT_LIMITS, InvalidReport, parse_report

log = structlog.get_logger(__name__)

REPORTS_PATH: Final = "/v1/dmarc/reports"
# the body as sent, as the parser limits it (10 MiB); the unpacked size is the parser's own limit
MAX_REPORT_BYTES: Final = DEFAULT_LIMITS.max_input_bytes
UNKNOWN_DOMAIN: Final = "unknown_domain"


def body_limit(inner: LimitFor) -> LimitFor:
    """The gateway's body limits, with the report upload's own: a report may be larger than the 256 KiB
    every other small route allows."""
    def limit_for(path: str) -> int:
        return MAX_REPORT_BYTES if path.rstrip("/") == REPORTS_PATH else inner(path)

    return limit_for


# ------------------------------------------------------------------------------------------- shapes


class DkimResultOut(BaseModel):
    domain: str
    selector: str = Field(description="`none` when the report names none.")
    result: str


class SpfResultOut(BaseModel):
    domain: str
    scope: str = Field(description="`mfrom` or `helo` (`mfrom` when the report names none).")
    result: str


class RecordOut(BaseModel):
    source_ip: str
    count: int
    disposition: str = Field(description="none | quarantine | reject: what the receiver did.")
    dkim: str = Field(description="The DMARC-aligned DKIM verdict (policy_evaluated).")
    spf: str = Field(description="The DMARC-aligned SPF verdict (policy_evaluated).")
    header_from: str
    dkim_results: list[DkimResultOut]
    spf_results: list[SpfResultOut]


class PolicyOut(BaseModel):
    p: str
    sp: str
    adkim: str
    aspf: str
    pct: int | None = Field(description="null in an RFC 9990 report (DMARCbis has no pct).")
    np: str | None = Field(default=None, description="Only when the report publishes it.")


class DmarcReportOut(BaseModel):
    id: int
    org_name: str
    org_email: str
    report_id: str
    begin: str = Field(description="ISO 8601, UTC.", examples=["2024-06-13T00:00:00Z"])
    end: str = Field(description="ISO 8601, UTC.", examples=["2024-06-13T23:59:59Z"])
    domain: str
    policy: PolicyOut
    records: list[RecordOut]


class DmarcReportPage(BaseModel):
    reports: list[DmarcReportOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class Dispositions(BaseModel):
    none: int
    quarantine: int
    reject: int


class SourceSummary(BaseModel):
    source_ip: str
    messages: int
    dkim_pass: int = Field(description="Messages whose aligned DKIM verdict (policy_evaluated) was pass.")
    spf_pass: int = Field(description="Messages whose aligned SPF verdict (policy_evaluated) was pass.")
    dmarc_pass: int = Field(description="Messages with an aligned DKIM or SPF pass.")
    dispositions: Dispositions


class DmarcSummary(BaseModel):
    domain: str
    start: datetime
    end: datetime
    sources: list[SourceSummary]


# ------------------------------------------------------------------------------------------ answers


def refused(code: str, message: str, loc: tuple[str, ...] = ("body",)) -> JSONResponse:
    """A 422 in the gateway's error shape; ``error`` and the detail's ``type`` are the refusal's code."""
    metrics.DMARC_REPORTS.labels(code).inc()
    body = ValidationErrorBody(error=code, message=message,
                               detail=[FieldError(loc=list(loc), msg=message, type=code)])
    return JSONResponse(body.model_dump(), 422)


def _domain(value: str, loc: tuple[str, str]) -> str:
    try:
        return normalise_name(value)
    except InvalidDomain as e:
        raise InvalidInput(loc, str(e), "invalid_domain") from None


def _utc(value: datetime, name: str) -> datetime:
    value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        datetime_in_range(value)
    except ValueError as e:
        raise InvalidInput(("query", name), str(e), "datetime_out_of_range") from None
    return value.astimezone(UTC)


def report_xml(report: dict[str, Any]) -> bytes:
    """The stored report written back as RFC 7489 aggregate report XML (what SMTPeter's call returns):
    the stored fields, not the bytes the reporter sent."""
    root = ElementTree.Element("feedback")

    def add(parent: ElementTree.Element, tag: str, text: object = None) -> ElementTree.Element:
        node = ElementTree.SubElement(parent, tag)
        if text is not None:
            node.text = str(text)
        return node

    add(root, "version", "1.0")
    meta = add(root, "report_metadata")
    add(meta, "org_name", report["org_name"])
    add(meta, "email", report["org_email"])
    add(meta, "report_id", report["report_id"])
    span = add(meta, "date_range")
    for key in ("begin", "end"):
        add(span, key, int(datetime.fromisoformat(report[key].replace("Z", "+00:00")).timestamp()))
    policy = add(root, "policy_published")
    add(policy, "domain", report["domain"])
    for key in ("adkim", "aspf", "p", "sp", "pct", "np"):
        if report["policy"].get(key) is not None:
            add(policy, key, report["policy"][key])
    for rec in report["records"]:
        record = add(root, "record")
        row = add(record, "row")
        add(row, "source_ip", rec["source_ip"])
        add(row, "count", rec["count"])
        evaluated = add(row, "policy_evaluated")
        for key in ("disposition", "dkim", "spf"):
            add(evaluated, key, rec[key])
        add(add(record, "identifiers"), "header_from", rec["header_from"])
        auth = add(record, "auth_results")
        for kind, keys in (("dkim_results", ("domain", "selector", "result")),
                           ("spf_results", ("domain", "scope", "result"))):
            for result in rec[kind]:
                node = add(auth, kind.removesuffix("_results"))
                for key in keys:
                    add(node, key, result[key])
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))


# ------------------------------------------------------------------------------------------- routes

DateP = Annotated[str, Path(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="YYYY-MM-DD (UTC).")]
ReporterP = Annotated[str, Path(min_length=1, max_length=253,
                                description="SMTPeter's FROM: the domain that sent the report.")]
ForP = Annotated[str, Path(min_length=1, max_length=253,
                           description="SMTPeter's FOR: the domain the report is about.")]
DomainQ = Annotated[str, Query(min_length=1, max_length=253, description="The report's domain (any case).")]
# application/gzip and application/zip are read too (the bytes decide): documented as octet-stream, the
# binary type OpenAPI tools (and the fuzzer) know how to send
DOCUMENTED_TYPES: Final = ("application/xml", "text/xml", "message/rfc822", "application/octet-stream")
REPORT_BODY = {"requestBody": {"required": True, "description": "The report as the reporter sent it: "
                               "XML, a gzip or zip archive of it (application/gzip, application/zip), or "
                               "the whole report mail.",
                               "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                           for t in DOCUMENTED_TYPES}}}
XML_OR_JSON = {"content": {"application/xml": {"schema": {"type": "string"}},
                           "application/json": {"schema": {"$ref": "#/components/schemas/DmarcReportOut"}}},
               "description": "The report as RFC 7489 XML (JSON when the Accept header asks for it)."}


def dmarc_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["dmarc"])

    @router.post("/dmarc/reports", status_code=201, response_model=DmarcReportOut,
                 responses={200: {"model": DmarcReportOut,
                                  "description": "Stored before: the stored report."},
                            **responses(401, 413, 422, 503)},
                 summary="Store a DMARC aggregate report",
                 description="The body is the report: XML, gzip, zip or the whole report mail "
                             "(message/rfc822), at most 10 MiB (100 MiB unpacked). The bytes decide what "
                             "they are; the Content-Type is a hint. 201 with the stored report; 200 with "
                             "the report stored before when the same report (org_name, report_id) comes "
                             "again. 422 for anything else: `error` names why (`failure_report`, "
                             "`tls_report`, `empty`, `zip_bomb`, `entity_expansion`, …, or `unknown_domain` "
                             "when the report's domain is not a sending domain of the account nor a "
                             "subdomain of one).",
                 openapi_extra=REPORT_BODY)
    async def post_report(request: Request, account_id: Account) -> JSONResponse:
        body = await request.body()
        try:
            report = await offload.run(len(body), parse_report, body, request.headers.get("content-type"))
        except InvalidReport as exc:
            log.info("api.dmarc_report_refused", account_id=account_id, code=exc.code, size=len(body))
            return refused(exc.code, exc.message)
        data = report.as_json()
        domain = store.report_domain(data)
        async with deps_of(request).sessions.begin() as s:
            if domain is None or not await store.sends_for(s, account_id, domain):
                log.info("api.dmarc_report_refused", account_id=account_id, code=UNKNOWN_DOMAIN)
                return refused(UNKNOWN_DOMAIN, f"{data['domain']} is not a sending domain of this account "
                               "(nor a subdomain of one)", ("body", "policy_published", "domain"))
            try:
                ident, created = await store.store(s, account_id, data, domain)
            except store.UnstorableReport as exc:
                return refused(exc.code, exc.message)
        metrics.DMARC_REPORTS.labels("stored" if created else "duplicate").inc()
        log.info("api.dmarc_report_stored", account_id=account_id, id=ident, duplicate=not created,
                 records=len(data["records"]))
        if created:
            return JSONResponse({"id": ident, **data, "domain": domain}, 201)
        async with deps_of(request).sessions() as s:
            stored = await store.get(s, account_id, ident)
        return JSONResponse(stored, 200)

    @router.get("/dmarc/reports", response_model=DmarcReportPage, responses=responses(401, 422, 503),
                summary="The account's DMARC reports, newest first",
                description="Newest first by the report's end date, then id. Without `domain`, every "
                            "domain's; with it, the reports about exactly that domain.")
    async def list_reports(request: Request, account_id: Account,
                           domain: Annotated[str | None, Query(min_length=1, max_length=253)] = None,
                           cursor: Annotated[str | None, Query(max_length=200)] = None,
                           limit: Annotated[int, Query(ge=1, le=store.MAX_PAGE)] = 20) -> JSONResponse:
        name = _domain(domain, ("query", "domain")) if domain is not None else None
        try:
            after = store.Cursor.decode(cursor) if cursor else None
        except ValueError as e:
            raise InvalidInput(("query", "cursor"), str(e), "invalid_cursor") from None
        async with deps_of(request).sessions() as s:
            page = await store.list_page(s, account_id, name, after, limit)
        last = page[-1] if len(page) == limit else None
        next_cursor = None
        if last is not None:
            end = datetime.fromisoformat(last["end"].replace("Z", "+00:00"))
            next_cursor = store.Cursor(end, last["id"]).encode()
        return JSONResponse({"reports": page, "next_cursor": next_cursor})

    @router.get("/dmarc/summary", response_model=DmarcSummary, responses=responses(401, 422, 503),
                summary="Per source IP: messages, passes and dispositions over a window",
                description="Over the reports about `domain` whose date range overlaps [start, end) "
                            "(ISO 8601; UTC without an offset). `dkim_pass`/`spf_pass`: the aligned "
                            "verdicts (policy_evaluated); `dmarc_pass`: either passed. Most messages "
                            "first.")
    async def summary(request: Request, account_id: Account, domain: DomainQ,
                      start: Annotated[datetime, Query(description="ISO 8601, inclusive.")],
                      end: Annotated[datetime, Query(description="ISO 8601, exclusive.")]) -> DmarcSummary:
        name = _domain(domain, ("query", "domain"))
        lo, hi = _utc(start, "start"), _utc(end, "end")
        if lo >= hi:
            raise InvalidInput(("query", "end"), "end must be after start", "invalid_range")
        async with deps_of(request).sessions() as s:
            sources = await store.summary(s, account_id, name, lo, hi)
        return DmarcSummary(domain=name, start=lo, end=hi,
                            sources=[SourceSummary.model_validate(x) for x in sources])

    @router.get("/dmarc", response_model=list[str], responses=responses(401, 503), tags=["smtpeter"],
                summary="The days reports were received (SMTPeter-compatible)",
                description="`YYYY-MM-DD`, UTC, oldest first.")
    async def days(request: Request, account_id: Account) -> list[str]:
        async with deps_of(request).sessions() as s:
            return [d.isoformat() for d in await store.received_days(s, account_id)]

    smtpeter: dict[str, Any] = dict(response_class=Response, tags=["smtpeter"],
                    responses={200: XML_OR_JSON, **responses(401, 404, 422, 503)},
                    summary="One DMARC report of a day, from a reporter, about a domain "
                            "(SMTPeter-compatible)",
                    description="A report is of the day when it was received that day (UTC) or its date "
                                "range overlaps it. `reporter` matches the report's org_name or the domain "
                                "of its org_email (or a parent of it). Several reports: the first (oldest "
                                "begin), or the `index`-th from 0. The XML is the stored report written "
                                "back in the RFC 7489 schema; `Accept: application/json` gives the API's "
                                "JSON instead.")

    @router.get("/dmarc/{day}/{reporter}/{domain}", **smtpeter)
    async def smtpeter_first(request: Request, account_id: Account, day: DateP, reporter: ReporterP,
                             domain: ForP) -> Response:
        return await _smtpeter_report(request, account_id, day, reporter, domain, 0)

    @router.get("/dmarc/{day}/{reporter}/{domain}/{index}", **smtpeter)
    async def smtpeter_nth(request: Request, account_id: Account, day: DateP, reporter: ReporterP,
                           domain: ForP, index: Annotated[int, Path(ge=0, le=100_000)]) -> Response:
        return await _smtpeter_report(request, account_id, day, reporter, domain, index)

    return router


async def _smtpeter_report(request: Request, account_id: str, day: str, reporter: str, domain: str,
                           index: int) -> Response:
    try:
        when = date.fromisoformat(day)
    except ValueError:
        raise InvalidInput(("path", "day"), "not a date (YYYY-MM-DD)", "invalid_date") from None
    try:
        name = normalise_name(domain)
    except InvalidDomain:
        name = None
    found = []
    if name is not None:
        async with deps_of(request).sessions() as s:
            found = await store.of_day(s, account_id, when, reporter.strip().rstrip("."), name)
    if index >= len(found):
        return JSONResponse({"error": "not_found", "message": "no such DMARC report in this account"}, 404)
    report = found[index]
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "xml" not in accept:
        return JSONResponse(report)
    return Response(report_xml(report), media_type="application/xml")

