"""Recipient domains: the unit of routing, sharding and MX lookup.

A domain is keyed by its lower-case A-label (IDNA 2008 with UTS #46 mapping, as browsers and MTAs do),
so ``User@Bücher.DE`` and ``user@xn--bcher-kva.de`` route together, hash to the same shard and share
one MX lookup. Recipient addresses themselves are passed on unchanged.
"""

from __future__ import annotations

import functools
import re

import idna

# LDH labels; underscores are tolerated because real mail domains have them (and DNS allows them)
_ASCII_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class BadAddress(ValueError):
    """An address whose domain cannot be routed (no @, empty or invalid domain)."""


@functools.lru_cache(maxsize=4096)
def normalise_domain(domain: str) -> str:
    """The lower-case ASCII (A-label) form of ``domain``; raises BadAddress when it is not a host name.
    Cached: a sender's mail goes to few domains, and each is checked label by label."""
    domain = domain.strip().rstrip(".")
    if domain.startswith("[") and domain.endswith("]"):
        raise BadAddress(f"address literals are not routed: {domain}")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError) as e:
            raise BadAddress(f"invalid domain {domain!r}: {e}") from e
    labels = ascii_domain.split(".")
    if len(labels) < 2 or len(ascii_domain) > 253 or not all(_ASCII_LABEL.match(label) for label in labels):
        raise BadAddress(f"not a valid mail domain: {domain!r}")
    return ascii_domain


def domain_of(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise BadAddress(f"not an address: {address!r}")
    return normalise_domain(domain)


def ascii_address(address: str) -> str:
    """The address with its domain as an A-label, so servers without SMTPUTF8 accept it when the local
    part is ASCII."""
    local, _, _ = address.strip().rpartition("@")
    return f"{local}@{domain_of(address)}"


def group_by_domain(recipients: list[str]) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Recipients by routing domain (first-seen order, duplicates dropped case-insensitively), and the
    addresses that cannot be routed with the reason."""
    groups: dict[str, list[str]] = {}
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    for rcpt in recipients:
        if rcpt.lower() in seen:
            continue
        seen.add(rcpt.lower())
        try:
            groups.setdefault(domain_of(rcpt), []).append(rcpt)
        except BadAddress as e:
            bad.append((rcpt, str(e)))
    return groups, bad
