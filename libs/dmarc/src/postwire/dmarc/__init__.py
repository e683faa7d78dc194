"""DMARC aggregate (RUA) reports: read one from what a reporter sends, refuse what is not one.

``parse_report(data, content_type)`` accepts RFC 7489 and RFC 9990 report XML as plain XML, gzip, zip
or a whole report mail, and returns an `AggregateReport` whose ``as_json()`` is the API's shape; anything
else (a failure or TLS report, an empty or hostile file) raises `InvalidReport` with a machine code.
Pure, no I/O; bounded in memory and time by `Limits`.
"""

from postwire.dmarc.errors import InvalidReport
from postwire.dmarc.limits import DEFAULT_LIMITS, Limits
from postwire.dmarc.model import (
    AggregateReport,
    DkimResult,
    PolicyOverride,
    PolicyPublished,
    Record,
    SpfResult,
)
from postwire.dmarc.parse import parse_report

__all__ = [
    "DEFAULT_LIMITS",
    "AggregateReport",
    "DkimResult",
    "InvalidReport",
    "Limits",
    "PolicyOverride",
    "PolicyPublished",
    "Record",
    "SpfResult",
    "parse_report",
]
