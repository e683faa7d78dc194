"""Where mail for a domain goes: MX lookup (RFC 5321 §5.1) with dnspython's asyncio resolver.

- MX hosts in preference order, equal preferences shuffled so load spreads as the domain intends;
- no MX records → the domain itself is the implicit MX (its A/AAAA records);
- a null MX (RFC 7505, ``0 .``) → permanent failure 556 5.1.10;
- NXDOMAIN → permanent failure 5.1.2; SERVFAIL, REFUSED or a timeout → temporary (the message waits).

When nameservers are configured (POSTWIRE_DNS_NAMESERVERS) only they are asked: the system resolver is
never a silent fallback, so tests and split-horizon deployments see exactly the DNS they configured.
Answers are cached by their TTL (in MxResolver's own table, in front of dnspython's LRU cache), negative
ones by the zone's SOA minimum.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from postwire.dispatcher import metrics
from postwire.dispatcher.outcomes import Reply, local


@dataclass(frozen=True)
class MxHost:
    name: str
    preference: int


@dataclass(frozen=True)
class Route:
    domain: str
    hosts: list[MxHost]
    implicit: bool  # no MX records: the domain's own addresses are used


class DnsFailure(Exception):
    """The domain cannot be routed now (temporary reply) or ever (permanent reply)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random | None = None) -> list[MxHost]:
    """MX records → hosts to try, best first. Duplicates collapse and ``.`` targets are dropped (a null
    MX mixed with real ones is a misconfiguration; the real ones still work). Equal preferences are
    shuffled (RFC 5321 §5.1) so one MX of a pool does not take all the traffic."""
    best: dict[str, int] = {}
    for preference, target in records:
        name = target.rstrip(".").lower()
        if name and (name not in best or preference < best[name]):
            best[name] = preference
    hosts = [MxHost(name, pref) for name, pref in best.items()]
    (rng or random).shuffle(hosts)
    return sorted(hosts, key=lambda h: h.preference)  # stable: the shuffle survives within a preference


def is_null_mx(records: list[tuple[int, str]]) -> bool:
    """RFC 7505: the domain accepts no mail when its only MX target is the root."""
    return bool(records) and all(target.rstrip(".") == "" for _, target in records)


# how long a "no such record" answer is kept when the zone gives no SOA minimum with it
NEGATIVE_TTL_S = 60.0
_MAX_TTL_S = 3600.0


@dataclass(frozen=True)
class _Records:
    """What DNS said about one name and type, kept until ``expires`` (monotonic seconds)."""

    expires: float
    values: tuple[str, ...] | tuple[tuple[int, str], ...] = ()
    nxdomain: bool = False


class MxResolver:
    """MX routes and host addresses, each answer kept for its TTL in a table of our own.

    dnspython's cache holds the answers too, but going through its resolver costs more per message than
    the rest of the lookup (building and checking the query, exceptions for "no AAAA"); a relay asks
    the same few questions for every message to a domain, so the answers are kept as plain tuples, the
    negative ones (NXDOMAIN, no records of the type) for the SOA minimum the zone sent with them."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, rng: random.Random | None = None,
                 max_entries: int = 50_000) -> None:
        self._resolver = resolver
        self._rng = rng
        self._max = max_entries
        self._known: dict[tuple[str, str], _Records] = {}

    async def route(self, domain: str) -> Route:
        """The hosts to try for ``domain`` (an A-label), or DnsFailure."""
        found = await self._lookup(domain, "MX")
        if found.nxdomain:
            raise DnsFailure(local("5.1.2", f"Host or domain name not found: {domain} (NXDOMAIN)"))
        if not found.values:
            return Route(domain, [MxHost(domain, 0)], implicit=True)
        records = cast(tuple[tuple[int, str], ...], found.values)
        if is_null_mx(list(records)):
            raise DnsFailure(local("5.1.10", f"{domain} does not accept mail (null MX, RFC 7505)",
                                   code=556))
        return Route(domain, order_mx(records, self._rng), implicit=False)

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host``; empty when it has none. Raises DnsFailure (temporary)
        only when no address could be learned because of a DNS error."""
        found: list[str] = []
        error: DnsFailure | None = None
        for rtype in ("A", "AAAA"):
            try:
                found += cast(tuple[str, ...], (await self._lookup(host, rtype)).values)
            except DnsFailure as e:
                error = e
        if not found and error is not None:
            raise error
        return found

    async def _lookup(self, name: str, rtype: str) -> _Records:
        key = (name, rtype)
        now = time.monotonic()
        known = self._known.get(key)
        if known is not None and known.expires > now:
            return known
        known = await self._ask(name, rtype, now)
        if len(self._known) >= self._max:
            self._known.clear()  # rare; a bound, not a policy: everything is asked again once
        self._known[key] = known
        return known

    async def _ask(self, name: str, rtype: str, now: float) -> _Records:
        try:
            answer = await self._query(name, rtype)
        except dns.resolver.NXDOMAIN as e:
            return _Records(now + _negative_ttl(e.kwargs.get("responses", {}).values()), nxdomain=True)
        except dns.resolver.NoAnswer as e:
            return _Records(now + _negative_ttl([e.kwargs.get("response")]))
        ttl = min(float(answer.rrset.ttl), _MAX_TTL_S) if answer.rrset is not None else NEGATIVE_TTL_S
        if rtype == "MX":
            return _Records(now + ttl, tuple((int(rr.preference), rr.exchange.to_text(omit_final_dot=True))
                                             for rr in answer))
        return _Records(now + ttl, tuple(rr.to_text() for rr in answer))

    async def _query(self, name: str, rtype: str) -> dns.resolver.Answer:
        """One query; NXDOMAIN and NoAnswer pass through, every other failure becomes temporary."""
        try:
            answer = await self._resolver.resolve(name, rtype, search=False)
        except dns.resolver.NXDOMAIN:
            metrics.DNS_LOOKUPS.labels(rtype, "nxdomain").inc()
            raise
        except dns.resolver.NoAnswer:
            metrics.DNS_LOOKUPS.labels(rtype, "nodata").inc()
            raise
        except (dns.exception.DNSException, OSError) as e:
            metrics.DNS_LOOKUPS.labels(rtype, "error").inc()
            raise DnsFailure(local("4.4.3", f"DNS lookup failed for {name} {rtype}: "
                                            f"{e.__class__.__name__}: {e}")) from e
        metrics.DNS_LOOKUPS.labels(rtype, "ok").inc()
        return answer


def _negative_ttl(responses: Iterable[dns.message.Message | None]) -> float:
    """RFC 2308: a negative answer lives as long as the SOA record's minimum (capped by its TTL)."""
    for response in responses:
        for rrset in response.authority if response is not None else ():
            if rrset.rdtype == dns.rdatatype.SOA:
                return float(min(rrset.ttl, rrset[0].minimum, _MAX_TTL_S))
    return NEGATIVE_TTL_S
