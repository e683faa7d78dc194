"""/v1/dmarc against the real gateway (serve() on loopback, real nats-server and PostgreSQL): reports in
every container, stored once, refused with the parser's code, scoped to the account, summed up per
source IP, listed newest first, and served the SMTPeter way. Reports are written here (documentation
addresses; each test its own domains), plus the shared corpus when it is there."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import uuid
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from postwire.db.accounts import NewCredentials, create_account
from postwire.db.domains import InvalidDomain, add_domain, normalise_name, parent_names
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.migrate import upgrade
from postwire.dmarc import parse_report
from postwire.testing.corpus import corpus_path
from postwire.testing.dmarc_files import report_mail, zipped
from postwire.testing.postgres import create_database

from .conftest import Gateway, MakeAccount, StartGateway

DMARC_FIXTURES = Path(__file__).parents[3] / "libs" / "dmarc" / "tests" / "fixtures"
Row = tuple[str, int, str, str, str]  # source_ip, count, disposition, dkim, spf (policy_evaluated)


def epoch(day: str, time: str = "00:00:00") -> int:
    return int(datetime.fromisoformat(f"{day}T{time}+00:00").timestamp())


def report(domain: str, rows: Sequence[Row], *, report_id: str | None = None, org: str = "receiver.example",
           begin: str = "2026-11-01", end: str | None = None) -> bytes:
    """An RFC 7489 report: one day from ``begin`` (to 23:59:59 of ``end``), the rows as records."""
    records = "".join(f"""
  <record>
    <row><source_ip>{ip}</source_ip><count>{count}</count>
      <policy_evaluated><disposition>{disp}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated>
    </row>
    <identifiers><header_from>{domain}</header_from></identifiers>
    <auth_results>
      <dkim><domain>{domain}</domain><selector>s1</selector><result>{dkim}</result></dkim>
      <spf><domain>bounces.{domain}</domain><result>{spf}</result></spf>
    </auth_results>
  </record>""" for ip, count, disp, dkim, spf in rows)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <report_metadata>
    <org_name>{org}</org_name><email>noreply-dmarc@{org}</email>
    <report_id>{report_id or uuid.uuid4().hex}</report_id>
    <date_range><begin>{epoch(begin)}</begin><end>{epoch(end or begin, "23:59:59")}</end></date_range>
  </report_metadata>
  <policy_published><domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><pct>100</pct>
  </policy_published>{records}
</feedback>
""".encode()


def zip_bomb() -> bytes:
    """200 MiB of zeros in one zip member (about 200 KB): past the 100 MiB unpacked limit."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("report.xml", "w") as f:
        chunk = b"\0" * (1024 * 1024)
        for _ in range(200):
            f.write(chunk)
    return buffer.getvalue()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<feedback><report_metadata><org_name>&lol3;</org_name></report_metadata></feedback>"""


async def register(pg_url: str, account_id: str, *names: str) -> None:
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            for name in names:
                await add_domain(s, account_id, name, algorithm="ed25519-sha256")
    finally:
        await engine.dispose()


def unique_domain() -> str:
    return f"d{uuid.uuid4().hex[:12]}.example"


async def post(gw: Gateway, creds: NewCredentials, body: bytes, content_type: str = "application/xml",
               ) -> httpx.Response:
    return await gw.http.post("/v1/dmarc/reports", content=body,
                              headers=gw.auth(creds, **{"Content-Type": content_type}))


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("postwire_api_dmarc_reports_total", {"outcome": outcome}) or 0.0


ROWS: list[Row] = [("192.0.2.10", 12, "none", "pass", "fail"), ("2001:DB8::25", 3, "reject", "fail", "fail")]


@pytest.mark.parametrize("container", ["xml", "gzip", "zip", "mail"])
async def test_each_container_is_stored_and_answered_as_json(gateway: Gateway, account: NewCredentials,
                                                             pg_url: str, container: str) -> None:
    domain = unique_domain()
    await register(pg_url, account.account_id, domain)
    xml = report(domain, ROWS, report_id="r-1")
    body, content_type = {
        "xml": (xml, "text/xml"),
        "gzip": (gzip.compress(xml), "application/gzip"),
        "zip": (zipped(xml), "application/zip"),
        "mail": (report_mail(gzip.compress(xml), "gzip", "report.xml.gz"), "message/rfc822"),
    }[container]

    r = await post(gateway, account, body, content_type)

    assert r.status_code == 201, r.text
    got = r.json()
    assert isinstance(got.pop("id"), int)
    assert got == {
        "org_name": "receiver.example", "org_email": "noreply-dmarc@receiver.example", "report_id": "r-1",
        "begin": "2026-11-01T00:00:00Z", "end": "2026-11-01T23:59:59Z", "domain": domain,
        "policy": {"p": "reject", "sp": "reject", "adkim": "r", "aspf": "r", "pct": 100},
        "records": [
            {"source_ip": "192.0.2.10", "count": 12, "disposition": "none", "dkim": "pass", "spf": "fail",
             "header_from": domain, "dkim_results": [{"domain": domain, "selector": "s1", "result": "pass"}],
             "spf_results": [{"domain": f"bounces.{domain}", "scope": "mfrom", "result": "fail"}]},
            {"source_ip": "2001:db8::25", "count": 3, "disposition": "reject", "dkim": "fail", "spf": "fail",
             "header_from": domain, "dkim_results": [{"domain": domain, "selector": "s1", "result": "fail"}],
             "spf_results": [{"domain": f"bounces.{domain}", "scope": "mfrom", "result": "fail"}]}]}


async def test_the_same_report_is_stored_once(gateway: Gateway, account: NewCredentials, pg_url: str) -> None:
    domain = unique_domain()
    await register(pg_url, account.account_id, domain)
    xml = report(domain, ROWS, report_id="dup-1")
    before = counted("duplicate")

    first = await post(gateway, account, xml)
    again = await post(gateway, account, gzip.compress(xml), "application/gzip")  # another container
    changed = await post(gateway, account, report(domain, ROWS[:1], report_id="dup-1"))  # same ids

    assert first.status_code == 201
    assert again.status_code == 200 and again.json() == first.json()
    assert changed.status_code == 200 and changed.json() == first.json()  # the stored one, not the new one
    assert counted("duplicate") == before + 2
    listed = await gateway.http.get("/v1/dmarc/reports", params={"domain": domain},
                                    headers=gateway.auth(account))
    assert [x["id"] for x in listed.json()["reports"]] == [first.json()["id"]]


@pytest.mark.parametrize(("name", "code"), [
    ("failure report", "failure_report"),
    ("TLS report", "tls_report"),
    ("empty body", "empty"),
    ("billion laughs", "entity_expansion"),
    ("zip bomb", "zip_bomb"),
    ("not a report", "not_aggregate_report"),
    ("unknown domain", "unknown_domain"),
])
async def test_what_is_not_a_report_of_the_account_is_a_422(gateway: Gateway, account: NewCredentials,
                                                            pg_url: str, name: str, code: str) -> None:
    body, content_type = {
        "failure report": ((DMARC_FIXTURES / "failure-report.eml").read_bytes(), "message/rfc822"),
        "TLS report": ((DMARC_FIXTURES / "tls-report.json").read_bytes(), "application/tlsrpt+json"),
        "empty body": (b"", "application/xml"),
        "billion laughs": (BILLION_LAUGHS, "application/xml"),
        "zip bomb": (zip_bomb() if name == "zip bomb" else b"", "application/zip"),
        "not a report": (b"<?xml version='1.0'?><html><body>hi</body></html>", "text/xml"),
        "unknown domain": (report(unique_domain(), ROWS), "application/xml"),
    }[name]
    before = counted(code)

    r = await post(gateway, account, body, content_type)

    assert r.status_code == 422, r.text
    got = r.json()
    assert got["error"] == code and got["message"] and got["detail"][0]["type"] == code
    assert counted(code) == before + 1


async def test_a_report_larger_than_10_mib_is_a_413(gateway: Gateway, account: NewCredentials) -> None:
    r = await post(gateway, account, b"<" + b" " * (10 * 1024 * 1024), "application/xml")
    assert r.status_code == 413 and r.json()["error"] == "message_too_large"


async def test_subdomains_of_a_sending_domain_count_but_not_its_parent(
        gateway: Gateway, account: NewCredentials, pg_url: str) -> None:
    parent = unique_domain()
    await register(pg_url, account.account_id, f"mail.{parent}")

    sub = await post(gateway, account, report(f"News.Mail.{parent}", ROWS))
    up = await post(gateway, account, report(parent, ROWS))

    assert sub.status_code == 201 and sub.json()["domain"] == f"news.mail.{parent}"
    assert up.status_code == 422 and up.json()["error"] == "unknown_domain"


async def test_another_account_never_sees_nor_sums_the_reports(
        gateway: Gateway, make_account: MakeAccount, pg_url: str) -> None:
    owner, other = await make_account(), await make_account()
    domain = unique_domain()
    await register(pg_url, owner.account_id, domain)
    await register(pg_url, other.account_id, unique_domain())
    assert (await post(gateway, owner, report(domain, ROWS))).status_code == 201

    listed = await gateway.http.get("/v1/dmarc/reports", headers=gateway.auth(other))
    by_domain = await gateway.http.get("/v1/dmarc/reports", params={"domain": domain},
                                       headers=gateway.auth(other))
    summed = await gateway.http.get("/v1/dmarc/summary", headers=gateway.auth(other), params={
        "domain": domain, "start": "2026-11-01", "end": "2026-11-02"})
    posted = await post(gateway, other, report(domain, ROWS))  # another account's domain: not theirs
    days = await gateway.http.get("/v1/dmarc", headers=gateway.auth(other))

    assert listed.json() == {"reports": [], "next_cursor": None}
    assert by_domain.json()["reports"] == []
    assert summed.status_code == 200 and summed.json()["sources"] == []
    assert posted.status_code == 422 and posted.json()["error"] == "unknown_domain"
    assert days.json() == []


async def test_the_summary_adds_up_per_source_ip(gateway: Gateway, account: NewCredentials,
                                                 pg_url: str) -> None:
    domain = unique_domain()
    await register(pg_url, account.account_id, domain)
    a, b, c = "192.0.2.1", "192.0.2.2", "198.51.100.7"
    reports = [
        report(domain, [(a, 10, "none", "pass", "pass"), (b, 4, "quarantine", "fail", "fail")],
               org="google.com", begin="2026-11-01"),
        report(domain, [(a, 5, "none", "fail", "pass"), (a, 2, "reject", "fail", "fail"),
                        (c, 7, "none", "pass", "fail")], org="yahoo.com", begin="2026-11-02"),
        # overlaps the window by its last day only: counted
        report(domain, [(b, 1, "none", "pass", "fail")], org="outlook.com", begin="2026-10-25",
               end="2026-11-01"),
        # outside the window: not counted
        report(domain, [(a, 1000, "none", "pass", "pass")], org="google.com", begin="2026-11-03"),
        report(domain, [(a, 1000, "none", "pass", "pass")], org="google.com", begin="2026-10-30",
               end="2026-10-31"),
    ]
    for body in reports:
        assert (await post(gateway, account, body)).status_code == 201

    r = await gateway.http.get("/v1/dmarc/summary", headers=gateway.auth(account), params={
        "domain": domain.upper(), "start": "2026-11-01T00:00:00Z", "end": "2026-11-03"})

    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["domain"], got["start"], got["end"]) == (domain, "2026-11-01T00:00:00Z",
                                                         "2026-11-03T00:00:00Z")
    assert got["sources"] == [
        # a: 10 (both pass) + 5 (spf only) + 2 (neither)
        {"source_ip": a, "messages": 17, "dkim_pass": 10, "spf_pass": 15, "dmarc_pass": 15,
         "dispositions": {"none": 15, "quarantine": 0, "reject": 2}},
        {"source_ip": c, "messages": 7, "dkim_pass": 7, "spf_pass": 0, "dmarc_pass": 7,
         "dispositions": {"none": 7, "quarantine": 0, "reject": 0}},
        # b: 4 (neither, quarantined) + 1 (dkim) from the report that ends on the window's first day
        {"source_ip": b, "messages": 5, "dkim_pass": 1, "spf_pass": 0, "dmarc_pass": 1,
         "dispositions": {"none": 1, "quarantine": 4, "reject": 0}}]

    bad = await gateway.http.get("/v1/dmarc/summary", headers=gateway.auth(account), params={
        "domain": domain, "start": "2026-11-03", "end": "2026-11-01"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "invalid_range"


async def test_the_listing_is_newest_first_a_page_at_a_time(gateway: Gateway, account: NewCredentials,
                                                            pg_url: str) -> None:
    domain, elsewhere = unique_domain(), unique_domain()
    await register(pg_url, account.account_id, domain, elsewhere)
    ids = {}
    for day in ("2026-11-02", "2026-11-04", "2026-11-01", "2026-11-03"):
        r = await post(gateway, account, report(domain, ROWS, begin=day))
        ids[day] = r.json()["id"]
    await post(gateway, account, report(elsewhere, ROWS, begin="2026-11-05"))

    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"domain": domain, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await gateway.http.get("/v1/dmarc/reports", params=params,
                                       headers=gateway.auth(account))).json()
        seen += [x["id"] for x in page["reports"]]
        assert all(x["domain"] == domain and len(x["records"]) == 2 for x in page["reports"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[d] for d in ("2026-11-04", "2026-11-03", "2026-11-02", "2026-11-01")]
    everything = (await gateway.http.get("/v1/dmarc/reports", headers=gateway.auth(account))).json()
    assert len(everything["reports"]) == 5 and everything["reports"][0]["domain"] == elsewhere
    bad = await gateway.http.get("/v1/dmarc/reports", params={"cursor": "nonsense"},
                                 headers=gateway.auth(account))
    assert bad.status_code == 422


async def test_smtpeters_call_returns_the_report_of_a_day_as_xml(gateway: Gateway, account: NewCredentials,
                                                                  pg_url: str) -> None:
    domain = unique_domain()
    await register(pg_url, account.account_id, domain)
    first = (await post(gateway, account, report(domain, ROWS, org="google.com", begin="2026-11-01"))).json()
    second = (await post(gateway, account, report(domain, ROWS[:1], org="google.com", begin="2026-11-01",
                                                  report_id="later"))).json()
    await post(gateway, account, report(domain, ROWS, org="yahoo.com", begin="2026-11-01"))
    auth = gateway.auth(account)

    xml = await gateway.http.get(f"/v1/dmarc/2026-11-01/google.com/{domain}", headers=auth)
    nth = await gateway.http.get(f"/v1/dmarc/2026-11-01/GOOGLE.com/{domain}/1", headers=auth,
                                 params={"access_token": account.api_key})
    as_json = await gateway.http.get(f"/v1/dmarc/2026-11-01/google.com/{domain}",
                                     headers={**auth, "Accept": "application/json"})
    past_end = await gateway.http.get(f"/v1/dmarc/2026-11-01/google.com/{domain}/2", headers=auth)
    other_day = await gateway.http.get(f"/v1/dmarc/2026-11-05/google.com/{domain}", headers=auth)
    today = datetime.now(UTC).date().isoformat()
    received_today = await gateway.http.get(f"/v1/dmarc/{today}/google.com/{domain}", headers=auth)
    days = await gateway.http.get("/v1/dmarc", headers=auth)

    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/xml")
    reread = parse_report(xml.content, "application/xml").as_json()
    assert reread == {k: v for k, v in first.items() if k != "id"}
    assert parse_report(nth.content).as_json()["report_id"] == second["report_id"]
    assert as_json.json() == first
    assert past_end.status_code == 404 and other_day.status_code == 404
    assert received_today.status_code == 200
    assert days.json() == [today]


async def test_the_corpus_through_the_api(start_gateway: StartGateway, make_account: MakeAccount,
                                          pg_server: Any, pg_url: str) -> None:
    """Every labelled file of the shared corpus posted as its reporter sent it: the valid ones stored
    and answered as the parser reads them (a repeat of a report as itself), the others refused with a
    422 naming why. Its own database: the corpus' domains (example.com, …) belong to one account."""
    root = corpus_path("dmarc")
    labels = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines() if line.strip()]
    url = create_database(pg_server)
    await asyncio.to_thread(upgrade, url)
    gw = await start_gateway(database_url=url)
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            creds = await create_account(s, "corpus")
            registered: set[str] = set()
            for label in labels:
                try:
                    name = normalise_name(label["report"]["domain"]) if label["valid"] else None
                except InvalidDomain:
                    name = None
                if name and not registered & set(parent_names(name)):
                    await add_domain(s, creds.account_id, name, algorithm="ed25519-sha256")
                    registered.add(name)
    finally:
        await engine.dispose()

    stored: dict[tuple[str, str], dict[str, Any]] = {}
    for label in labels:
        data = (root / label["file"]).read_bytes()
        r = await post(gw, creds, data, label["content_type"])
        if not label["valid"]:
            assert r.status_code == 422, (label["file"], r.text)
            continue
        expected = parse_report(data, label["content_type"]).as_json()
        try:
            expected["domain"] = normalise_name(expected["domain"])
        except InvalidDomain:
            assert r.status_code == 422 and r.json()["error"] == "unknown_domain", label["file"]
            continue
        assert r.status_code in (200, 201), (label["file"], r.text)
        got = r.json()
        key = (got["org_name"], got["report_id"])
        if r.status_code == 201:
            assert got == {"id": got["id"], **expected}, label["file"]
            stored[key] = got
        else:
            assert got == stored[key], label["file"]
    assert stored
