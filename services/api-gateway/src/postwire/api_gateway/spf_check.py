"""A domain's SPF record (RFC 7208) read the way a receiver reads it before it knows the client's
address: every include and redirect followed, every term that costs a DNS lookup counted.

What makes receivers answer ``permerror`` (so SPF fails for every message) is a problem: no record or
two of them (section 4.5), a syntax error, an include or redirect target without exactly one SPF
record (5.2, 6.1), an include loop, more than 10 lookup terms (include, a, mx, ptr, exists, redirect:
4.6.4, counted through the whole tree), more than 2 void lookups (4.6.4: a query answering NXDOMAIN or
no records), an ``mx`` with more than 10 hosts. ``+all`` (anyone passes) is a problem too. ``?all`` and
``ptr`` (deprecated, 5.5) are warnings. Terms with macros (``%{i}``) depend on the message and are
counted but not followed.

The lookups of one record run concurrently, on the caller's resolver; :data:`QUERY_CAP` queries and
the caller's time budget bound the walk (a tree that needs more is far past the limit anyway, and the
report then says the count is a lower bound).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import dns.asyncresolver

from postwire.api_gateway.dns_lookup import Answer, lookup

LOOKUP_LIMIT: Final = 10
VOID_LIMIT: Final = 2
MX_HOST_LIMIT: Final = 10
QUERY_CAP: Final = 50
_MECHANISMS: Final = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_COSTS_LOOKUP: Final = frozenset({"include", "a", "mx", "ptr", "exists"})
_MODIFIER: Final = re.compile(r"^([a-z][a-z0-9_.\-]*)=(.*)$", re.IGNORECASE)
_CIDR: Final = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$")
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?"
_DOMAIN: Final = re.compile(rf"^(?:{_LABEL}\.)+{_LABEL}\.?$", re.IGNORECASE)


def spf_records(txt: tuple[str, ...] | list[str]) -> list[str]:
    """The TXT values that are SPF records: ``v=spf1`` then a space or the end (RFC 7208 4.5)."""
    return [v for v in txt if v[:6].lower() == "v=spf1" and (len(v) == 6 or v[6] == " ")]


@dataclass(frozen=True)
class Term:
    text: str
    name: str  # mechanism or modifier name, lower case
    qualifier: str  # "+", "-", "~", "?"; "" for a modifier
    target: str | None  # the domain-spec or address, as written
    modifier: bool = False


def parse(record: str) -> tuple[list[Term], list[str]]:
    """The record's terms and its syntax errors (each one a permerror)."""
    terms: list[Term] = []
    errors: list[str] = []
    seen_modifiers: set[str] = set()
    for text in record.split()[1:]:
        qualifier = text[0] if text[0] in "+-~?" else ""
        body = text[len(qualifier):]
        modifier = _MODIFIER.match(body)
        if modifier and not qualifier:
            name = modifier.group(1).lower()
            if name in ("redirect", "exp"):
                if name in seen_modifiers:
                    errors.append(f"{name}= appears twice")
                elif not _valid_domain_spec(modifier.group(2)):
                    errors.append(f"invalid domain in {text!r}")
                seen_modifiers.add(name)
            terms.append(Term(text, name, "", modifier.group(2), modifier=True))
            continue  # unknown modifiers are ignored (RFC 7208 6)
        name, colon, rest = body.partition(":")
        name, slash, cidr = name.partition("/")
        name = name.lower()
        target = rest if colon else None
        if name not in _MECHANISMS:
            errors.append(f"unknown term {text!r}")
            continue
        if slash:  # "a/24", "mx/24//64": no domain, a prefix length
            target, cidr_text = None, "/" + cidr
        else:
            cidr_text = ""
        error = _mechanism_error(name, target, cidr_text)
        if error:
            errors.append(f"{error} in {text!r}")
            continue
        if name in ("a", "mx") and target is not None:
            target = _CIDR.match(target).group(1)  # type: ignore[union-attr]  # the pattern always matches
        terms.append(Term(text, name, qualifier or "+", target))
    return terms, errors


def _mechanism_error(name: str, target: str | None, cidr_text: str) -> str | None:
    if name == "all":
        return "all takes no value" if target is not None or cidr_text else None
    if name in ("ip4", "ip6"):
        if target is None:
            return "an address is required"
        try:
            network = ipaddress.ip_network(target, strict=False)
        except ValueError:
            return "invalid address"
        return None if network.version == int(name[-1]) else "wrong address family"
    if name in ("include", "exists"):
        if not target:
            return "a domain is required"
        return None if _valid_domain_spec(target) else "invalid domain"
    spec = _CIDR.match((target or "") + cidr_text)
    assert spec is not None  # the pattern matches every string
    domain, v4, v6 = spec.groups()
    if (v4 and int(v4) > 32) or (v6 and int(v6) > 128):
        return "invalid prefix length"
    if name == "ptr" and cidr_text:
        return "ptr takes no prefix length"
    return None if not domain or _valid_domain_spec(domain) else "invalid domain"


def _valid_domain_spec(spec: str) -> bool:
    return "%" in spec or bool(_DOMAIN.match(spec))


def _name(target: str) -> str:
    return target.rstrip(".").lower()


@dataclass
class SpfReport:
    """What the walk found. ``problems`` are ordered most serious first and each says what to change."""

    domain: str
    records: list[str] = field(default_factory=list)
    lookups: int = 0
    void_lookups: int = 0
    complete: bool = True
    all: str | None = None
    includes: list[str] = field(default_factory=list)
    authorises_relay: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    _ranked: list[tuple[int, str]] = field(default_factory=list, repr=False)

    def problem(self, rank: int, text: str) -> None:
        self._ranked.append((rank, text))
        self.problems = [t for _, t in sorted(self._ranked, key=lambda p: p[0])]


# Problem ranks: the first problem becomes the one-line fix.
_SYNTAX, _LOOP, _TOO_MANY, _VOID, _NO_RECORD, _PASS_ALL, _MX_HOSTS = range(7)


class _Walk:
    def __init__(self, resolver: dns.asyncresolver.Resolver, report: SpfReport, relay_include: str) -> None:
        self.resolver = resolver
        self.report = report
        self.relay = _name(relay_include)
        self.queries = 0

    async def ask(self, name: str, rtype: str) -> Answer | None:
        """None when the query cap stopped us (the report is then incomplete)."""
        if self.queries >= QUERY_CAP:
            self.report.complete = False
            return None
        self.queries += 1
        answer = await lookup(self.resolver, name, rtype)
        if answer.failed:
            self.report.failed.append(f"{name} {rtype}")
        elif answer.void:
            self.report.void_lookups += 1
        return answer

    async def record(self, domain: str, text: str, path: tuple[str, ...]) -> None:
        r = self.report
        top = len(path) == 1
        where = "" if top else f" (in the SPF record of {domain})"
        terms, errors = parse(text)
        for error in errors:
            r.problem(_SYNTAX, f"SPF syntax error: {error}{where}: receivers answer permerror")
        has_all = any(t.name == "all" and not t.modifier for t in terms)
        jobs: list[Coroutine[Any, Any, object]] = []
        for t in terms:
            if t.modifier and t.name != "redirect":
                continue
            if t.modifier and (has_all or not t.target):
                continue  # redirect= is ignored when the record has an all (RFC 7208 6.1); empty: an error
            if t.name == "all":
                if top:
                    r.all = t.text
                if t.qualifier == "+":
                    r.problem(_PASS_ALL, f"{t.text!r}{where} lets every server on the Internet pass SPF: "
                                         "end the record with ~all or -all")
                elif t.qualifier == "?" and top:
                    r.warnings.append("?all (neutral) protects nothing: end the record with ~all or -all")
                continue
            if t.name not in _COSTS_LOOKUP and not t.modifier:
                continue  # ip4, ip6: no lookup
            r.lookups += 1
            target = _name(t.target) if t.target else domain
            if t.name == "ptr":
                r.warnings.append(f"{t.text!r}{where}: ptr is deprecated (RFC 7208 5.5) and slow; "
                                  "list the addresses with ip4:/ip6: instead")
                continue
            if "%" in target:
                r.warnings.append(f"{t.text!r}{where} has macros: counted, not followed")
                continue
            if t.name in ("include", "redirect"):
                if target == self.relay:
                    r.authorises_relay = True
                if target in path:
                    r.problem(_LOOP, f"include loop: {' → '.join((*path, target))}: remove the include "
                                     "that points back")
                    continue
                jobs.append(self.follow(t.name, target, path))
            elif t.name == "a":
                jobs.append(self.addresses(target))
            elif t.name == "mx":
                jobs.append(self.mx(target, where))
            else:  # exists
                jobs.append(self.ask(target, "A"))
        await asyncio.gather(*jobs)

    async def follow(self, kind: str, target: str, path: tuple[str, ...]) -> None:
        if len(path) > LOOKUP_LIMIT:  # only reachable past the limit, which is reported already
            return
        answer = await self.ask(target, "TXT")
        if answer is None or answer.failed:
            return
        self.report.includes.append(target)
        found = spf_records(answer.values)
        if not found:
            what = "does not exist" if answer.void else "has no SPF record"
            self.report.problem(_NO_RECORD, f"{kind}:{target} {what}: receivers answer permerror; "
                                            f"remove it or fix {target}")
        elif len(found) > 1:
            self.report.problem(_NO_RECORD, f"{kind}:{target} has {len(found)} SPF records: receivers "
                                            "answer permerror")
        else:
            await self.record(target, found[0], (*path, target))

    async def addresses(self, target: str) -> None:
        if self.queries + 2 > QUERY_CAP:
            self.report.complete = False
            return
        self.queries += 2
        a, aaaa = await asyncio.gather(lookup(self.resolver, target, "A"),
                                       lookup(self.resolver, target, "AAAA"))
        if a.failed or aaaa.failed:
            self.report.failed.append(f"{target} A/AAAA")
        elif a.void and aaaa.void:
            self.report.void_lookups += 1

    async def mx(self, target: str, where: str) -> None:
        answer = await self.ask(target, "MX")
        if answer is not None and len(answer.values) > MX_HOST_LIMIT:
            self.report.problem(_MX_HOSTS, f"mx:{target}{where} has {len(answer.values)} MX hosts "
                                           f"(> {MX_HOST_LIMIT}): receivers answer permerror")


async def evaluate(resolver: dns.asyncresolver.Resolver, domain: str, relay_include: str,
                   budget_s: float) -> SpfReport:
    """``domain``'s SPF record and everything it reaches. ``failed`` lists the lookups that failed
    (the answer is then uncertain); an empty ``records`` means the domain has no SPF record."""
    report = SpfReport(domain)
    walk = _Walk(resolver, report, relay_include)
    try:
        async with asyncio.timeout(budget_s):
            top = await lookup(resolver, domain, "TXT")
            if top.failed:
                report.failed.append(f"{domain} TXT")
                return report
            report.records = spf_records(top.values)
            if len(report.records) > 1:
                report.problem(_SYNTAX, f"{len(report.records)} SPF records at {domain}: receivers answer "
                                        "permerror; merge them into one")
            elif report.records:
                await walk.record(domain, report.records[0], (domain,))
    except TimeoutError:
        report.complete = False
        report.failed.append(f"the lookups took longer than {budget_s:g} s")
    if report.lookups > LOOKUP_LIMIT:
        at_least = "" if report.complete else "at least "
        report.problem(_TOO_MANY, f"too many DNS lookups ({at_least}{report.lookups} > {LOOKUP_LIMIT}): "
                                  "flatten or remove includes")
    if report.void_lookups > VOID_LIMIT:
        report.problem(_VOID, f"too many void DNS lookups ({report.void_lookups} > {VOID_LIMIT}: names "
                              "that do not exist): remove the includes, a: or mx: terms that point nowhere")
    elif report.void_lookups:
        report.warnings.append(f"{report.void_lookups} lookup(s) point at a name that does not exist "
                               f"(more than {VOID_LIMIT} is a permerror)")
    return report
