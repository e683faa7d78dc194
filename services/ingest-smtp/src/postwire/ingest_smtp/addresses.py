"""Envelope address checks, stricter than aiosmtpd's parser: what we queue must be deliverable later.

aiosmtpd already answers ``553 5.1.3`` when it cannot parse an address at all; these checks catch what it
lets through (over-long parts, bad domains, unqualified names), in the spirit of Postfix's
reject_non_fqdn_sender / reject_non_fqdn_recipient.
"""

from __future__ import annotations

import ipaddress
import re

MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3 path (256) minus the angle brackets
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 253

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a usable mailbox, or None when it is. The text goes into the SMTP reply."""
    if len(address) > MAX_ADDRESS:
        return f"address longer than {MAX_ADDRESS} characters"
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "address must be local-part@domain"
    if len(local) > MAX_LOCAL_PART:
        return f"local part longer than {MAX_LOCAL_PART} characters"
    if not (_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local)):
        return "invalid characters in local part"
    return domain_problem(domain)


def domain_problem(domain: str) -> str | None:
    if domain.startswith("[") and domain.endswith("]"):
        return None if _is_address_literal(domain[1:-1]) else "invalid address literal"
    if len(domain) > MAX_DOMAIN:
        return f"domain longer than {MAX_DOMAIN} characters"
    labels = domain.split(".")
    if len(labels) < 2:
        return "domain must be fully qualified"
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "invalid domain name"
    if labels[-1].isdigit():
        return "invalid top-level domain"
    return None


def _is_address_literal(text: str) -> bool:
    """RFC 5321 4.1.3: [1.2.3.4] or [IPv6:...]."""
    try:
        if text[:5].lower() == "ipv6:":
            return ipaddress.ip_address(text[5:]).version == 6
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
