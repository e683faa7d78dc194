"""Which provider a bounce belongs to: by the MX when known (hosted company domains included), else by
the consumer domain."""

from __future__ import annotations

import pytest

from postwire.core.mailbox_providers import OTHER, provider_of


@pytest.mark.parametrize(("host", "domain", "provider"), [
    ("gmail-smtp-in.l.google.com", "gmail.com", "Google"),
    ("aspmx.l.google.com.", "company.example", "Google"),
    ("company-example.mail.protection.outlook.com", "company.example", "Microsoft"),
    ("hotmail-com.olc.protection.outlook.com", "hotmail.com", "Microsoft"),
    ("mta7.am0.yahoodns.net", "yahoo.com", "Yahoo"),
    ("mx01.mail.icloud.com", "icloud.com", "Apple"),
    ("", "GMAIL.com", "Google"),
    (None, "aol.com", "Yahoo"),
    ("mx.company.example", "company.example", OTHER),
    ("", "", OTHER),
    ("google.com.attacker.example", "company.example", OTHER),
])
def test_provider_of(host: str | None, domain: str, provider: str) -> None:
    assert provider_of(host, domain) == provider
