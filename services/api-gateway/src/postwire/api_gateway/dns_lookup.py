"""One DNS question, answered in the three ways a domain check must tell apart: values, nothing (the
name or the type does not exist: a "void" lookup in RFC 7208's words), or a failed lookup (timeout,
SERVFAIL), which no check may read as "nothing"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.resolver

_NOT_FOUND: Final = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


@dataclass(frozen=True)
class Answer:
    """TXT: each record's strings joined; CNAME: targets without the final dot, lower case; MX:
    ``"<preference> <host>"`` (a null MX, RFC 7505, is ``"0 ."``); A/AAAA: addresses."""

    values: tuple[str, ...] = ()
    failed: bool = False

    @property
    def void(self) -> bool:
        return not self.failed and not self.values


FAILED: Final = Answer(failed=True)


async def lookup(resolver: dns.asyncresolver.Resolver, name: str, rtype: str) -> Answer:
    try:
        answer = await resolver.resolve(name, rtype)
    except _NOT_FOUND:
        return Answer()
    except (dns.exception.DNSException, OSError):
        return FAILED
    if rtype == "TXT":
        return Answer(tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer))
    if rtype == "CNAME":
        return Answer(tuple(str(r.target).rstrip(".").lower() for r in answer))
    if rtype == "MX":
        mx = sorted((r.preference, str(r.exchange).rstrip(".").lower() or ".") for r in answer)
        return Answer(tuple(f"{pref} {host}" for pref, host in mx))
    return Answer(tuple(r.to_text() for r in answer))
