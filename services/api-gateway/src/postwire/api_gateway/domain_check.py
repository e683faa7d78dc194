"""Whether a sending domain's DNS records are published right now: each record Postwire asks for
(postwire.db.domains.dns_records: DKIM key, SPF include, return-path CNAME, tracking CNAME) looked up
live and compared, plus the domain's DMARC record, which receivers require of bulk senders.

Each answer says what was expected, what was found, ``ok`` / ``missing`` / ``wrong``, and one line on
how to fix it. Lookups use POSTWIRE_DNS_NAMESERVERS when set (never the system resolver then) and keep
no cache, so a record published a moment ago is seen; a lookup that fails (timeout, SERVFAIL) says
``unknown`` rather than guessing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final, Literal

import dns.asyncresolver
import dns.exception
import dns.resolver

from postwire.core.resolver import make_resolver, parse_nameservers
from postwire.db.domains import DnsRecord, DnsSettings, DomainInfo, dns_records
from postwire.db.models import Domain

State = Literal["ok", "missing", "wrong", "unknown"]
_NOT_FOUND: Final = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


@dataclass(frozen=True)
class RecordCheck:
    purpose: str
    type: str
    name: str
    expected: str
    found: list[str]
    state: State
    fix: str


async def _lookup(resolver: dns.asyncresolver.Resolver, name: str, rtype: str) -> list[str] | None:
    """The record values (TXT strings joined, CNAME targets without the final dot); [] when there are
    none; None when the lookup failed."""
    try:
        answer = await resolver.resolve(name, rtype)
    except _NOT_FOUND:
        return []
    except (dns.exception.DNSException, OSError):
        return None
    if rtype == "TXT":
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    return [str(r.target).rstrip(".").lower() for r in answer]


def _squash(value: str) -> str:
    return "".join(value.split()).lower()


def _judge(record: DnsRecord, found: list[str]) -> tuple[State, str]:
    if record.purpose == "spf":
        spf = [v for v in found if v.lower().startswith("v=spf1")]
        include = record.value.split()[1]  # include:<the relay's SPF>
        if not spf:
            return "missing", f"publish the TXT record {record.value!r} at {record.name}"
        if len(spf) > 1:
            return "wrong", ("more than one SPF record: receivers then ignore all of them (RFC 7208); "
                             "merge them")
        if include.lower() not in spf[0].lower().split():
            return "wrong", f"add {include} to the SPF record at {record.name}"
        return "ok", ""
    if record.type == "CNAME":
        if not found:
            return "missing", f"publish {record.name} CNAME {record.value}"
        if record.value.rstrip(".").lower() not in found:
            return "wrong", f"point {record.name} at {record.value}"
        return "ok", ""
    if not found:
        return "missing", f"publish the TXT record at {record.name}"
    if _squash(record.value) not in {_squash(v) for v in found}:
        return "wrong", f"the TXT record at {record.name} differs: replace it with the expected value"
    return "ok", ""


def _dmarc(domain: str, found: list[str] | None) -> RecordCheck:
    name = f"_dmarc.{domain}"
    expected = "v=DMARC1; p=none (at least)"
    if found is None:
        return RecordCheck("dmarc", "TXT", name, expected, [], "unknown", "the lookup failed: try again")
    records = [v for v in found if v.replace(" ", "").lower().startswith("v=dmarc1")]
    if not records:
        return RecordCheck("dmarc", "TXT", name, expected, found, "missing",
                           f"publish a DMARC record at {name}, e.g. \"v=DMARC1; p=none; rua=mailto:…\" "
                           "(Gmail and Yahoo require one of bulk senders)")
    if len(records) > 1:
        return RecordCheck("dmarc", "TXT", name, expected, found, "wrong",
                           "more than one DMARC record: receivers then apply none (RFC 7489); keep one")
    return RecordCheck("dmarc", "TXT", name, expected, found, "ok", "")


def resolver_for(nameservers: str, timeout_s: float) -> dns.asyncresolver.Resolver:
    """No cache: a record published a moment ago must be seen at the next check."""
    return make_resolver(parse_nameservers(nameservers), timeout_s, cache_size=0)


async def check(domain: Domain | DomainInfo, settings: DnsSettings,
                resolver: dns.asyncresolver.Resolver) -> list[RecordCheck]:
    """Every record of ``domain`` looked up now (concurrently)."""
    records = dns_records(domain, settings)
    answers = await asyncio.gather(*(_lookup(resolver, r.name, r.type) for r in records),
                                   _lookup(resolver, f"_dmarc.{domain.name}", "TXT"))
    out = []
    for record, found in zip(records, answers[:-1], strict=True):
        if found is None:
            out.append(RecordCheck(record.purpose, record.type, record.name, record.value, [], "unknown",
                                   "the lookup failed: try again"))
            continue
        state, fix = _judge(record, found)
        out.append(RecordCheck(record.purpose, record.type, record.name, record.value, found, state, fix))
    out.append(_dmarc(domain.name, answers[-1]))
    return out
