"""What a DMARC aggregate report says, normalised, and its pinned JSON shape (`as_json`).

The JSON is what the API returns and stores, so its keys are fixed here and nowhere else. Fields that
RFC 9990 added (generator, testing, discovery method, policy override reasons, envelope identifiers) are
kept on the objects for callers that want them, but stay out of the JSON until the API asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Schema = Literal["rfc7489", "rfc9990"]


def iso_utc(moment: datetime) -> str:
    """``2018-10-01T00:00:00Z``: whole seconds, UTC, the form the API's clients sort and compare."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class PolicyPublished:
    """The DMARC record the reporter found for the domain, with RFC defaults filled in."""

    domain: str
    p: str
    sp: str
    adkim: str
    aspf: str
    pct: int | None          # None in an RFC 9990 report: DMARCbis dropped pct
    np: str | None = None    # only when the report publishes it
    fo: str | None = None
    testing: str | None = None
    discovery_method: str | None = None

    def as_json(self) -> dict[str, Any]:
        policy: dict[str, Any] = {"p": self.p, "sp": self.sp, "adkim": self.adkim, "aspf": self.aspf,
                                  "pct": self.pct}
        if self.np is not None:
            policy["np"] = self.np
        return policy


@dataclass(frozen=True, slots=True)
class DkimResult:
    domain: str
    selector: str
    result: str

    def as_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "selector": self.selector, "result": self.result}


@dataclass(frozen=True, slots=True)
class SpfResult:
    domain: str
    scope: str
    result: str

    def as_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "scope": self.scope, "result": self.result}


@dataclass(frozen=True, slots=True)
class PolicyOverride:
    """Why the receiver applied something other than the published policy (forwarded, mailing_list, …)."""

    type: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One row: ``count`` messages from ``source_ip`` that were evaluated the same way."""

    source_ip: str
    count: int
    disposition: str
    dkim: str                # DMARC-aligned DKIM verdict (policy_evaluated)
    spf: str                 # DMARC-aligned SPF verdict (policy_evaluated)
    header_from: str
    dkim_results: tuple[DkimResult, ...] = ()
    spf_results: tuple[SpfResult, ...] = ()
    envelope_from: str | None = None
    envelope_to: str | None = None
    reasons: tuple[PolicyOverride, ...] = ()

    @property
    def dmarc_pass(self) -> bool:
        """DMARC passes when either aligned mechanism passes (RFC 7489 and DMARCbis alike)."""
        return self.dkim == "pass" or self.spf == "pass"

    def as_json(self) -> dict[str, Any]:
        return {
            "source_ip": self.source_ip,
            "count": self.count,
            "disposition": self.disposition,
            "dkim": self.dkim,
            "spf": self.spf,
            "header_from": self.header_from,
            "dkim_results": [r.as_json() for r in self.dkim_results],
            "spf_results": [r.as_json() for r in self.spf_results],
        }


@dataclass(frozen=True, slots=True)
class AggregateReport:
    """One RUA report: who sent it, for which domain and period, and what they saw."""

    org_name: str
    org_email: str
    report_id: str
    begin: datetime
    end: datetime
    policy: PolicyPublished
    records: tuple[Record, ...]
    schema: Schema = "rfc7489"
    version: str | None = None
    generator: str | None = None
    org_name_as_written: str | None = None   # set when org_name was filled in from org_email

    @property
    def domain(self) -> str:
        return self.policy.domain

    @property
    def message_count(self) -> int:
        return sum(r.count for r in self.records)

    @property
    def dmarc_pass_count(self) -> int:
        """Messages that passed DMARC, for the summary's pass rate."""
        return sum(r.count for r in self.records if r.dmarc_pass)

    def as_json(self) -> dict[str, Any]:
        """The pinned API shape; ``begin``/``end`` as ISO 8601 UTC strings."""
        return {
            "org_name": self.org_name,
            "org_email": self.org_email,
            "report_id": self.report_id,
            "begin": iso_utc(self.begin),
            "end": iso_utc(self.end),
            "domain": self.policy.domain,
            "policy": self.policy.as_json(),
            "records": [r.as_json() for r in self.records],
        }
