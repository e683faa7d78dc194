"""The domains a message says it is From (RFC 5322 section 3.6.2), as DMARC judges it.

ingest-smtp and the API refuse mail From a domain the account has not verified
(``postwire.db.sender_domains``); this reads the domains out of the message they are about to accept,
cheaply: one regex over the top-level header block, no MIME parse.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import Final

from postwire.core.sendoptions import HEADER_END

# a From field with its continuation lines; only at the start of a line, so never inside another field
_FROM_FIELD: Final = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_FOLD: Final = re.compile(r"\r?\n(?=[ \t])")


def header_from_domains(raw: bytes) -> list[str]:
    """The lower-case domain of every address in every From field of ``raw``'s top-level header block
    (RFC 5322 allows one field with several mailboxes); empty when there is none."""
    end = HEADER_END.search(raw)
    head = raw if end is None else raw[: end.start()]
    domains: list[str] = []
    for field in _FROM_FIELD.finditer(head):
        domains += address_domains(field.group(1).decode("utf-8", "replace"))
    return domains


def address_domains(value: str) -> list[str]:
    """The lower-case domains of the addresses in an address-list value (display names, groups and
    RFC 2047 words allowed); an address without ``@`` has none."""
    found = []
    for _name, address in getaddresses([_FOLD.sub("", value)]):
        local, at, domain = address.rpartition("@")
        domain = domain.strip().rstrip(".").lower()
        if at and local and domain:
            found.append(domain)
    return found
