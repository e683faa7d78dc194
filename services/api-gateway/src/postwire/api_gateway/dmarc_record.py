"""A DMARC policy record (RFC 7489 section 6.3) parsed into its tags, and the organizational domain a
receiver falls back to when a domain publishes none (section 6.6.3).

The organizational domain needs the Public Suffix List, which neither dnspython nor any dependency of
Postwire has. :func:`organizational_domain` uses the last two labels, or three under the common
two-level suffixes of :data:`TWO_LEVEL_SUFFIXES` (``co.uk``, ``com.au``, ...). A domain under a
suffix the list lacks (``example.pvt.k12.ma.us``) gets a wrong organizational domain; the check then
looks for the fallback record at the wrong name, which only matters for a domain without its own
DMARC record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

TWO_LEVEL_SUFFIXES: Final = frozenset({
    "co.uk", "org.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk", "ac.uk", "gov.uk", "sch.uk", "nhs.uk",
    "com.au", "net.au", "org.au", "edu.au", "gov.au", "asn.au", "id.au",
    "co.nz", "net.nz", "org.nz", "ac.nz", "govt.nz", "geek.nz",
    "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp", "ad.jp", "ed.jp",
    "co.kr", "or.kr", "ne.kr", "co.in", "net.in", "org.in", "firm.in", "gen.in", "ind.in",
    "co.za", "org.za", "web.za", "co.il", "org.il", "ac.il", "co.id", "or.id", "web.id",
    "com.br", "net.br", "org.br", "com.ar", "com.mx", "com.co", "com.pe", "com.uy", "com.ve", "com.ec",
    "com.cn", "net.cn", "org.cn", "com.hk", "com.tw", "com.sg", "com.my", "com.ph", "com.vn", "com.pk",
    "com.tr", "com.ua", "com.pl", "com.gr", "com.cy", "com.mt", "com.eg", "com.sa", "com.ng", "co.ke",
    "co.th", "in.th", "ac.th", "gv.at", "co.at", "or.at", "ac.at", "com.es", "org.es", "com.pt",
})
POLICIES: Final = ("none", "quarantine", "reject")
_FO: Final = frozenset({"0", "1", "d", "s"})
_URI: Final = re.compile(r"^([a-z][a-z0-9+.\-]*):([^!]+)(?:!(\d+)([kmgt])?)?$", re.IGNORECASE)


def organizational_domain(name: str) -> str:
    """``mail.example.co.uk`` → ``example.co.uk``, ``a.b.example.com`` → ``example.com``."""
    labels = name.rstrip(".").lower().split(".")
    keep = 3 if ".".join(labels[-2:]) in TWO_LEVEL_SUFFIXES else 2
    return ".".join(labels[-keep:])


def dmarc_records(txt: tuple[str, ...] | list[str]) -> list[str]:
    """The TXT values that are DMARC records (they begin with ``v=DMARC1``)."""
    return [v for v in txt if re.match(r"^v\s*=\s*dmarc1\s*(;|$)", v.strip(), re.IGNORECASE)]


@dataclass(frozen=True)
class ReportUri:
    uri: str
    address: str  # the mailbox of a mailto: URI, else ""
    domain: str  # its domain, lower case; "" for a URI that is not mailto:


@dataclass
class DmarcRecord:
    """The tags as published, the values that apply (RFC 7489 defaults filled in), and what is wrong."""

    tags: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rua: list[ReportUri] = field(default_factory=list)
    ruf: list[ReportUri] = field(default_factory=list)

    @property
    def p(self) -> str | None:
        return self.tags.get("p")

    @property
    def sp(self) -> str | None:
        """The subdomain policy; ``p`` when absent."""
        return self.tags.get("sp", self.p)

    @property
    def adkim(self) -> str:
        return self.tags.get("adkim", "r")

    @property
    def aspf(self) -> str:
        return self.tags.get("aspf", "r")

    @property
    def pct(self) -> int:
        value = self.tags.get("pct", "100")
        return int(value) if value.isdigit() else 100

    @property
    def fo(self) -> str:
        return self.tags.get("fo", "0")

    def summary(self) -> dict[str, object]:
        return {"p": self.p, "sp": self.sp, "adkim": self.adkim, "aspf": self.aspf, "pct": self.pct,
                "rua": [u.uri for u in self.rua], "ruf": [u.uri for u in self.ruf], "fo": self.fo}


def parse(text: str) -> DmarcRecord:
    """Tags are ``name=value`` separated by ``;``; ``v=DMARC1`` must come first, ``p`` must be there
    (a record without it is read as p=none only when rua is valid: we ask for it). Unknown tags are
    ignored, as receivers do; a tag given twice, or a value outside its grammar, is an error."""
    record = DmarcRecord()
    parts = [p.strip() for p in text.split(";")]
    for i, part in enumerate(part for part in parts if part):
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq:
            record.errors.append(f"{part!r} is not a tag=value pair")
            continue
        if i == 0 and name != "v":
            record.errors.append("v=DMARC1 must be the first tag")
        if name in record.tags:
            record.errors.append(f"{name}= appears twice")
            continue
        record.tags[name] = value if name in ("rua", "ruf") else value.lower()
    if record.tags.get("v", "").upper() != "DMARC1":
        record.errors.append("v=DMARC1 is missing")
    if "p" not in record.tags:
        record.errors.append("the p= tag (the policy) is missing")
    for tag in ("p", "sp"):
        if tag in record.tags and record.tags[tag] not in POLICIES:
            record.errors.append(f"{tag}={record.tags[tag]} is not none, quarantine or reject")
    for tag in ("adkim", "aspf"):
        if tag in record.tags and record.tags[tag] not in ("r", "s"):
            record.errors.append(f"{tag}={record.tags[tag]} is not r or s")
    if "pct" in record.tags and not (record.tags["pct"].isdigit() and int(record.tags["pct"]) <= 100):
        record.errors.append(f"pct={record.tags['pct']} is not a whole number from 0 to 100")
    if "ri" in record.tags and not record.tags["ri"].isdigit():
        record.errors.append(f"ri={record.tags['ri']} is not a number of seconds")
    if "fo" in record.tags and not set(record.tags["fo"].split(":")) <= _FO:
        record.errors.append(f"fo={record.tags['fo']} is not a colon-separated list of 0, 1, d, s")
    record.rua = _report_uris(record.tags.get("rua", ""), "rua", record.errors)
    record.ruf = _report_uris(record.tags.get("ruf", ""), "ruf", record.errors)
    return record


def _report_uris(value: str, tag: str, errors: list[str]) -> list[ReportUri]:
    uris = []
    for item in (u.strip() for u in value.split(",")):
        if not item:
            continue
        m = _URI.match(item)
        if not m:
            errors.append(f"{tag}: {item!r} is not a URI (mailto:address)")
            continue
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme != "mailto":
            uris.append(ReportUri(item, "", ""))
            continue
        local, at, domain = rest.rpartition("@")
        if not at or not local or "." not in domain:
            errors.append(f"{tag}: {item!r} is not a mailto: with an address")
            continue
        uris.append(ReportUri(item, rest, domain.rstrip(".").lower()))
    return uris
