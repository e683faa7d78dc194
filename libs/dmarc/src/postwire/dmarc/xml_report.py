"""Report XML (RFC 7489 appendix C, RFC 9990) to an `AggregateReport`, with the normalisation the API
promises: enumerations lower-cased, RFC defaults filled in, identifiers trimmed.

Defaults follow the RFCs rather than any one parser: an absent ``sp`` is ``p`` and absent ``adkim`` /
``aspf`` are relaxed (RFC 7489 section 6.3, unchanged in DMARCbis); an absent ``pct`` is 100 in an
RFC 7489 report and None in an RFC 9990 one, whose policy has no pct any more. A DKIM result without a
selector gets "none" and an SPF result without a scope "mfrom" (the only scope RFC 9990 reports).
An authentication result that names no domain says nothing about anyone and is left out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from xml.etree.ElementTree import ParseError

from postwire.dmarc.errors import (
    EMPTY,
    INVALID_FIELD,
    MISSING_FIELD,
    NOT_XML,
    TLS_REPORT,
    TOO_MANY_RECORDS,
    InvalidReport,
)
from postwire.dmarc.limits import Limits
from postwire.dmarc.model import (
    AggregateReport,
    DkimResult,
    PolicyOverride,
    PolicyPublished,
    Record,
    Schema,
    SpfResult,
)
from postwire.dmarc.xml_text import decode_xml, repair_xml
from postwire.dmarc.xml_tree import Node, parse_feedback_tree

DMARCBIS_NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"

T = TypeVar("T")


def read_report_xml(data: bytes, limits: Limits) -> AggregateReport:
    """The report in ``data`` (unpacked document bytes), or `InvalidReport` saying why it is not one."""
    text = decode_xml(data)
    stripped = text.lstrip()
    if not stripped:
        raise InvalidReport(EMPTY, "the report is empty")
    if not stripped.startswith("<"):
        raise _not_xml(stripped)
    try:
        return _parse(text, limits)
    except ParseError as strict_error:
        repaired = repair_xml(text)
        if repaired is None:
            raise InvalidReport(NOT_XML, f"the report is not well-formed XML: {strict_error}") from None
        try:
            return _parse(repaired, limits)
        except ParseError:
            raise InvalidReport(NOT_XML, f"the report is not well-formed XML: {strict_error}") from None


def _not_xml(text: str) -> InvalidReport:
    """An SMTP TLS report (RFC 8460 JSON) is named as such; anything else is just not XML."""
    head = text[:4096]
    if head.startswith("{") and ('"policies"' in head or '"organization-name"' in head):
        return InvalidReport(TLS_REPORT, "this is an SMTP TLS report (RFC 8460), "
                             "not a DMARC aggregate report")
    return InvalidReport(NOT_XML, "the report is not XML (nor gzip, zip or a report mail)")


def _parse(text: str, limits: Limits) -> AggregateReport:
    records: list[Record] = []

    def keep(node: Node) -> None:
        if len(records) >= limits.max_records:
            raise InvalidReport(TOO_MANY_RECORDS, f"the report has more than {limits.max_records} records")
        records.append(_record(node))

    root = parse_feedback_tree(text, limits, keep)
    return _report(root, tuple(records))


def _report(root: Node, records: tuple[Record, ...]) -> AggregateReport:
    metadata = _required_child(root, "report_metadata")
    version = root.text_of("version") or metadata.text_of("version") or None
    schema: Schema = "rfc9990" if _is_dmarcbis(root.namespace, version) else "rfc7489"
    email = _address(metadata.text_of("email") or "")
    written = metadata.text_of("org_name") or ""
    begin, end = _date_range(_required_child(metadata, "date_range"))
    return AggregateReport(
        org_name=written or email.rpartition("@")[2],
        org_email=email,
        report_id=_report_id(_required_text(metadata, "report_id")),
        begin=begin,
        end=end,
        policy=_policy(_required_child(root, "policy_published"), schema),
        records=records,
        schema=schema,
        version=version,
        generator=metadata.text_of("generator") or None,
        org_name_as_written=None if written else written,
    )


def _is_dmarcbis(namespace: str, version: str | None) -> bool:
    """RFC 9990 reports carry its namespace or version 2.0; neither exists in RFC 7489's schema."""
    if namespace == DMARCBIS_NAMESPACE:
        return True
    try:
        return version is not None and float(version) >= 2.0
    except ValueError:
        return False


def _policy(node: Node, schema: Schema) -> PolicyPublished:
    p = _enum(_required_text(node, "p"))
    pct_text = node.text_of("pct")
    default_pct = 100 if schema == "rfc7489" else None
    return PolicyPublished(
        domain=_required_text(node, "domain"),
        p=p,
        sp=_enum(node.text_of("sp")) or p,
        adkim=_enum(node.text_of("adkim")) or "r",
        aspf=_enum(node.text_of("aspf")) or "r",
        pct=_integer(pct_text, "pct") if pct_text else default_pct,
        np=_enum(node.text_of("np")) or None,
        fo=node.text_of("fo") or None,
        testing=_enum(node.text_of("testing")) or None,
        discovery_method=_enum(node.text_of("discovery_method")) or None,
    )


def _record(node: Node) -> Record:
    row = _required_child(node, "row")
    evaluated = row.child("policy_evaluated") or Node("policy_evaluated")
    identifiers = node.child("identifiers") or Node("identifiers")
    auth = node.child("auth_results") or Node("auth_results")
    return Record(
        source_ip=_ip(_required_text(row, "source_ip")),
        count=_integer(_required_text(row, "count"), "count"),
        disposition=_enum(evaluated.text_of("disposition")) or "none",
        dkim=_enum(evaluated.text_of("dkim")) or "none",
        spf=_enum(evaluated.text_of("spf")) or "none",
        header_from=identifiers.text_of("header_from") or "",
        dkim_results=_results(auth, "dkim", _dkim_result),
        spf_results=_results(auth, "spf", _spf_result),
        envelope_from=identifiers.text_of("envelope_from") or None,
        envelope_to=identifiers.text_of("envelope_to") or None,
        reasons=tuple(PolicyOverride(_enum(r.text_of("type")) or "other", r.text_of("comment") or None)
                      for r in evaluated.all("reason")),
    )


def _results(auth: Node, name: str, build: Callable[[Node, str], T]) -> tuple[T, ...]:
    return tuple(build(n, domain) for n in auth.all(name) if (domain := n.text_of("domain")))


def _dkim_result(node: Node, domain: str) -> DkimResult:
    return DkimResult(domain, node.text_of("selector") or "none", _enum(node.text_of("result")) or "none")


def _spf_result(node: Node, domain: str) -> SpfResult:
    return SpfResult(domain, _enum(node.text_of("scope")) or "mfrom", _enum(node.text_of("result")) or "none")


def _date_range(node: Node) -> tuple[datetime, datetime]:
    return _timestamp(_required_text(node, "begin"), "begin"), _timestamp(_required_text(node, "end"), "end")


def _timestamp(text: str, name: str) -> datetime:
    """Seconds since the epoch, as both schemas define them (a fractional part is tolerated and dropped)."""
    try:
        return datetime.fromtimestamp(int(float(text)), UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidReport(INVALID_FIELD, f"<{name}> is not a Unix timestamp: {text[:40]!r}") from None


def _integer(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidReport(INVALID_FIELD, f"<{name}> is not a whole number: {text[:40]!r}") from None
    if value < 0:
        raise InvalidReport(INVALID_FIELD, f"<{name}> is negative: {value}")
    return value


def _ip(text: str) -> str:
    """The address in its canonical form, so one sender is one key however the reporter wrote it."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidReport(INVALID_FIELD, f"<source_ip> is not an IP address: {text[:60]!r}") from None


def _report_id(text: str) -> str:
    """Without the ``<>`` and ``@host`` that some reporters wrap a Message-ID-like id in."""
    return text.strip().strip("<>").partition("@")[0].strip()


def _address(text: str) -> str:
    return text.strip().strip("<>").strip()


def _enum(text: str | None) -> str:
    return (text or "").strip().lower()


def _required_child(node: Node, name: str) -> Node:
    found = node.child(name)
    if found is None:
        raise InvalidReport(MISSING_FIELD, f"the report has no <{name}> in <{node.name}>")
    return found


def _required_text(node: Node, name: str) -> str:
    text = node.text_of(name)
    if not text:
        raise InvalidReport(MISSING_FIELD, f"the report has no <{name}> in <{node.name}>")
    return text
