"""A sending domain's health: the records Postwire asks for (postwire.db.domains.dns_records: DKIM key,
SPF include, return-path CNAME, tracking CNAME) and the ones receivers judge the domain by (its SPF
record as a whole, its DMARC policy, its MX), looked up live and compared.

Each answer says what was expected, what was found, ``ok`` / ``missing`` / ``wrong`` (``unknown``
when a lookup failed: a timeout is never read as "not published"), one line on how to fix it (also
for an ``ok`` that deserves a change, such as DMARC ``p=none``) and the details behind the verdict.
The SPF walk is spf_check.py, the DMARC grammar dmarc_record.py.

Which SPF counts: receivers check SPF for the envelope sender, which is the VERP return path on
POSTWIRE_BOUNCE_DOMAIN (the operator's SPF), not the From domain. The SPF record checked here is the
one Postwire asks the customer to publish at the From domain (it covers mail whose envelope sender is
that domain, and a receiver reading a broken one still reports it); whether SPF *aligns* for DMARC is
answered in the DMARC record's details: only when the return path is under the From domain's
organizational domain, which the return-path CNAME is there to prepare.

Every lookup uses one resolver (POSTWIRE_DNS_NAMESERVERS when set, never the system resolver then)
with no cache, so a record published a moment ago is seen; they run concurrently, each part of the
check within one time budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import dns.asyncresolver

from postwire.api_gateway.dmarc_record import DmarcRecord, dmarc_records, organizational_domain, parse
from postwire.api_gateway.dns_lookup import FAILED, Answer, lookup
from postwire.api_gateway.spf_check import LOOKUP_LIMIT, VOID_LIMIT, SpfReport, evaluate
from postwire.core.resolver import make_resolver, parse_nameservers
from postwire.db.domains import DnsRecord, DnsSettings, DomainInfo, dns_records
from postwire.db.models import Domain

State = Literal["ok", "missing", "wrong", "unknown"]
RecordName = Literal["dkim", "spf", "return_path", "tracking", "dmarc", "mx"]
BUDGET_S: Final = 10.0
LOOKUP_FAILED: Final = "the lookup failed: try again"


@dataclass(frozen=True)
class RecordCheck:
    purpose: RecordName
    type: str
    name: str
    expected: str
    found: list[str]
    state: State
    fix: str
    details: dict[str, Any] = field(default_factory=dict)
    required: bool = True  # False: informational, not counted by all_ok (the MX)

    @property
    def record(self) -> RecordName:
        return self.purpose


def all_ok(checks: Iterable[RecordCheck]) -> bool:
    """Every required record is ok (an informational one, the MX, may be anything)."""
    return all(c.state == "ok" for c in checks if c.required)


def resolver_for(nameservers: str, timeout_s: float) -> dns.asyncresolver.Resolver:
    """No cache: a record published a moment ago must be seen at the next check."""
    return make_resolver(parse_nameservers(nameservers), timeout_s, cache_size=0)


async def check(domain: Domain | DomainInfo, settings: DnsSettings, resolver: dns.asyncresolver.Resolver,
                budget_s: float = BUDGET_S) -> list[RecordCheck]:
    """Every record of ``domain``, looked up now (concurrently): those of dns_records in its order,
    then DMARC and MX. Whatever has not answered ``budget_s`` from now is ``unknown``."""
    deadline = asyncio.get_running_loop().time() + budget_s

    async def one(record: DnsRecord) -> RecordCheck:
        if record.purpose == "spf":
            report = await evaluate(resolver, domain.name, settings.spf_include, budget_s)
            return _spf(record, report, settings)
        return _judge(record, await _bounded(lookup(resolver, record.name, record.type), deadline))

    return list(await asyncio.gather(*(one(r) for r in dns_records(domain, settings)),
                                     _dmarc(domain.name, settings, resolver, deadline),
                                     _mx(domain.name, resolver, deadline)))


async def _bounded(answer: Awaitable[Answer], deadline: float) -> Answer:
    try:
        async with asyncio.timeout_at(deadline):
            return await answer
    except TimeoutError:
        return FAILED


def _squash(value: str) -> str:
    return "".join(value.split()).lower()


def _judge(record: DnsRecord, answer: Answer) -> RecordCheck:
    """DKIM key, return-path and tracking CNAMEs: the value Postwire asked for, or not."""
    found = list(answer.values)

    def verdict(state: State, fix: str) -> RecordCheck:
        return RecordCheck(record.purpose, record.type, record.name, record.value, found, state, fix)

    if answer.failed:
        return verdict("unknown", LOOKUP_FAILED)
    if record.type == "CNAME":
        if not found:
            return verdict("missing", f"publish {record.name} CNAME {record.value}")
        if record.value.rstrip(".").lower() not in found:
            return verdict("wrong", f"point {record.name} at {record.value}")
        return verdict("ok", "")
    if not found:
        return verdict("missing", f"publish the TXT record at {record.name}")
    if _squash(record.value) not in {_squash(v) for v in found}:
        return verdict("wrong", f"the TXT record at {record.name} differs: replace it with the expected "
                                "value")
    return verdict("ok", "")


def _one_line(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{problems[0]} (and {len(problems) - 1} more: see details.problems)"


def _spf(record: DnsRecord, report: SpfReport, settings: DnsSettings) -> RecordCheck:
    include = f"include:{settings.spf_include}"
    problems = list(report.problems)
    if len(report.records) == 1 and not report.authorises_relay:
        problems.append(f"add {include} to the SPF record at {record.name}")
    details: dict[str, Any] = {
        "lookups": report.lookups, "lookup_limit": LOOKUP_LIMIT, "void_lookups": report.void_lookups,
        "void_limit": VOID_LIMIT, "complete": report.complete, "all": report.all,
        "includes": report.includes, "authorises_postwire": report.authorises_relay,
        "problems": problems, "warnings": report.warnings, "failed_lookups": report.failed,
        "envelope_domain": settings.bounce_domain,
    }

    def verdict(state: State, fix: str) -> RecordCheck:
        return RecordCheck("spf", "TXT", record.name, record.value, report.records, state, fix, details)

    if problems:
        return verdict("wrong", _one_line(problems))
    if report.failed:
        return verdict("unknown", LOOKUP_FAILED)
    if not report.records:
        return verdict("missing", f"publish the TXT record {record.value!r} at {record.name}")
    return verdict("ok", report.warnings[0] if report.warnings else "")


async def _dmarc(domain: str, settings: DnsSettings, resolver: dns.asyncresolver.Resolver,
                 deadline: float) -> RecordCheck:
    """``_dmarc.<domain>``, else the organizational domain's record (whose ``sp=`` then applies); its
    tags; whether rua reaches Postwire and every other report address has authorised the reports."""
    name = f"_dmarc.{domain}"
    org = organizational_domain(domain)
    report_address = f"dmarc@{settings.bounce_domain}"
    expected = f"v=DMARC1; p=none|quarantine|reject; rua=mailto:{report_address}"
    names = [name] + ([f"_dmarc.{org}"] if org != domain else [])
    answers = await asyncio.gather(*(_bounded(lookup(resolver, n, "TXT"), deadline) for n in names))
    details: dict[str, Any] = {"organizational_domain": org, "report_address": report_address}

    def verdict(state: State, fix: str, found: tuple[str, ...] = answers[0].values) -> RecordCheck:
        return RecordCheck("dmarc", "TXT", name, expected, list(found), state, fix, details)

    if answers[0].failed:
        return verdict("unknown", LOOKUP_FAILED)
    own = dmarc_records(answers[0].values)
    if len(own) > 1:
        return verdict("wrong", "more than one DMARC record: receivers then apply none (RFC 7489); keep one")
    policy_domain, found, text = domain, answers[0].values, own[0] if own else None
    if text is None and len(answers) > 1:
        if answers[1].failed:
            return verdict("unknown", LOOKUP_FAILED)
        inherited = dmarc_records(answers[1].values)
        if len(inherited) == 1:
            policy_domain, found, text = org, answers[1].values, inherited[0]
    if text is None:
        return verdict("missing", f"publish a DMARC record at {name}, e.g. \"v=DMARC1; p=none; "
                                  f"rua=mailto:{report_address}\" (Gmail and Yahoo require one of bulk "
                                  "senders)")
    parsed = parse(text)
    inherited_from = policy_domain != domain
    details.update(found_at=f"_dmarc.{policy_domain}", inherited=inherited_from, policy=parsed.summary(),
                   applied_policy=parsed.sp if inherited_from else parsed.p, errors=parsed.errors,
                   alignment=_alignment(domain, parsed, settings.bounce_domain))
    if parsed.errors:
        return verdict("wrong", f"DMARC syntax error: {parsed.errors[0]}: receivers ignore the record; "
                                f"fix it at _dmarc.{policy_domain}", found)
    external = await _authorisations(parsed, policy_domain, resolver, deadline)
    details["external_reports"] = external
    details["rua_includes_postwire"] = any(u.address.lower() == report_address for u in parsed.rua)
    refused = [e for e in external if e["authorized"] is False]
    if refused:
        e = refused[0]
        who = "the Postwire operator" if e["domain"] == settings.bounce_domain else e["domain"]
        return verdict("wrong", f"reports to {e['uri']} are not sent: {who} must publish TXT \"v=DMARC1\" at "
                                f"{e['authorization']} (RFC 7489 7.1)", found)
    if any(e["authorized"] is None for e in external):
        return verdict("unknown", LOOKUP_FAILED, found)
    hints = _dmarc_hints(parsed, inherited_from, report_address, details["rua_includes_postwire"])
    details["warnings"] = hints
    return verdict("ok", hints[0] if hints else "", found)


def _dmarc_hints(parsed: DmarcRecord, inherited: bool, report_address: str, rua_ok: bool) -> list[str]:
    hints = []
    applied = parsed.sp if inherited else parsed.p
    if applied == "none":
        hints.append("p=none only monitors: once the reports show your mail passes, move to p=quarantine, "
                     "then p=reject")
    if not rua_ok:
        hints.append(f"add mailto:{report_address} to rua= to see the aggregate reports in Postwire")
    if parsed.pct < 100:
        hints.append(f"pct={parsed.pct}: the policy applies to part of the failing mail only; raise it "
                     "to 100")
    return hints


async def _authorisations(parsed: DmarcRecord, policy_domain: str, resolver: dns.asyncresolver.Resolver,
                          deadline: float) -> list[dict[str, Any]]:
    """RFC 7489 7.1: a report address outside the policy domain's organizational domain gets reports
    only when its domain publishes ``<policy domain>._report._dmarc.<its domain>`` = ``v=DMARC1``."""
    org = organizational_domain(policy_domain)
    external = {u.uri: u for u in (*parsed.rua, *parsed.ruf)
                if u.domain and organizational_domain(u.domain) != org}
    names = {uri: f"{policy_domain}._report._dmarc.{u.domain}" for uri, u in external.items()}
    answers = await asyncio.gather(*(_bounded(lookup(resolver, n, "TXT"), deadline) for n in names.values()))
    return [{"uri": uri, "domain": external[uri].domain, "authorization": auth,
             "authorized": None if a.failed else bool(dmarc_records(a.values))}
            for (uri, auth), a in zip(names.items(), answers, strict=True)]


def _alignment(domain: str, parsed: DmarcRecord, envelope_domain: str) -> dict[str, Any]:
    """DKIM: Postwire signs d=<domain>, so mail From the domain aligns in either mode, mail From a
    subdomain only in relaxed mode. SPF: the envelope sender is the VERP return path on the bounce
    domain, which aligns only when it lies under the From domain (its organizational domain in
    relaxed mode, the domain itself in strict mode)."""
    org = organizational_domain(domain)
    relaxed_spf = parsed.aspf == "r"
    spf_aligned = (organizational_domain(envelope_domain) == org if relaxed_spf
                   else envelope_domain.lower() == domain)
    dkim_why = f"mail From {domain} is signed d={domain}" + (
        "; mail From its subdomains aligns too (relaxed)" if parsed.adkim == "r"
        else "; mail From a subdomain does not align (adkim=s)")
    spf_why = (f"the return path is on {envelope_domain}, under {org}: SPF aligns" if spf_aligned
               else f"the return path is on {envelope_domain}, not under {org}: SPF passes for it but does "
                    "not align, so DMARC rests on the DKIM signature")
    return {"dkim": {"mode": "relaxed" if parsed.adkim == "r" else "strict", "signing_domain": domain,
                     "aligned": True, "why": dkim_why},
            "spf": {"mode": "relaxed" if relaxed_spf else "strict", "envelope_domain": envelope_domain,
                    "aligned": spf_aligned, "why": spf_why}}


async def _mx(domain: str, resolver: dns.asyncresolver.Resolver, deadline: float) -> RecordCheck:
    """Informational: a domain without MX sends fine, but replies and bounces addressed to it fail."""
    answer = await _bounded(lookup(resolver, domain, "MX"), deadline)
    found = list(answer.values)
    expected = f"an MX host accepting mail for {domain}"

    def verdict(state: State, fix: str) -> RecordCheck:
        return RecordCheck("mx", "MX", domain, expected, found, state, fix, {"hosts": len(found)},
                           required=False)

    if answer.failed:
        return verdict("unknown", LOOKUP_FAILED)
    if not found:
        return verdict("missing", f"publish an MX record for {domain}: mail can be sent without one, but "
                                  f"replies and bounces to addresses at {domain} fail")
    if found == ["0 ."]:
        return verdict("wrong", f"{domain} publishes a null MX (RFC 7505: it accepts no mail): replies fail "
                                "and some receivers refuse mail From it; publish a real MX")
    return verdict("ok", "")
