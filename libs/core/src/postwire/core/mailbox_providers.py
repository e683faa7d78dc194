"""Which mailbox provider a recipient is at, for reports (the console's bounces by provider).

By the MX host the message went to (or the MTA that reported the bounce) when it is known: a company
domain hosted at Google Workspace or Microsoft 365 is that provider's mail, whatever its name. Else by the
recipient's domain, for the big consumer domains. The MX names are the ones the providers publish for
their inbound servers (``gmail-smtp-in.l.google.com``, ``*.mail.protection.outlook.com``,
``mta5.am0.yahoodns.net``, ``mx01.mail.icloud.com`` ...).

This is reporting, not delivery: the dispatcher's per-provider limits come from its own shaping.yaml,
which operators edit.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Final

OTHER: Final = "other"


@dataclass(frozen=True)
class Provider:
    name: str
    mx: tuple[str, ...]  # shell globs on the MX (or reporting MTA) host name
    domains: frozenset[str]  # consumer domains, for when no host is known


PROVIDERS: Final = (
    Provider("Google", ("*.google.com", "*.googlemail.com"), frozenset({"gmail.com", "googlemail.com"})),
    Provider("Microsoft", ("*.outlook.com", "*.hotmail.com", "*.outlook.office365.com"),
             frozenset({"outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "hotmail.fr",
                        "hotmail.de", "hotmail.it", "hotmail.es", "live.nl", "live.fr", "outlook.de"})),
    Provider("Yahoo", ("*.yahoodns.net", "*.yahoo.com", "*.aol.com"),
             frozenset({"yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "yahoo.co.uk", "yahoo.fr",
                        "yahoo.de", "yahoo.co.jp"})),
    Provider("Apple", ("*.icloud.com", "*.me.com"), frozenset({"icloud.com", "me.com", "mac.com"})),
    Provider("GMX / WEB.DE", ("*.gmx.net", "*.gmx.com", "*.web.de"),
             frozenset({"gmx.net", "gmx.de", "gmx.com", "gmx.at", "web.de"})),
    Provider("Proton", ("*.protonmail.ch",), frozenset({"proton.me", "protonmail.com", "pm.me"})),
    Provider("Zoho", ("*.zoho.com", "*.zoho.eu"), frozenset({"zoho.com", "zohomail.com"})),
    Provider("Yandex", ("*.yandex.net", "*.yandex.ru"), frozenset({"yandex.ru", "yandex.com", "ya.ru"})),
    Provider("Mail.ru", ("*.mail.ru",), frozenset({"mail.ru", "bk.ru", "list.ru", "inbox.ru"})),
    Provider("Comcast", ("*.comcast.net",), frozenset({"comcast.net"})),
)


def provider_of(host: str | None, domain: str) -> str:
    """The provider's name for a recipient at ``domain`` whose mail went to ``host`` (may be unknown);
    :data:`OTHER` when neither says."""
    host = (host or "").strip().rstrip(".").lower()
    if host:
        for p in PROVIDERS:
            if any(fnmatch.fnmatchcase(host, pattern) for pattern in p.mx):
                return p.name
    domain = domain.strip().rstrip(".").lower()
    for p in PROVIDERS:
        if domain in p.domains:
            return p.name
    return OTHER
