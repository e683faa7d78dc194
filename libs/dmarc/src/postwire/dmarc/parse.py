"""`parse_report`: one submitted file in, one `AggregateReport` out, or `InvalidReport` saying why not.

The order of the checks is the order of their cost: the size as sent, then what the bytes are (magic
bytes, the declared content type as a tie-breaker), then unpacking within the unpacked-size budget, then
the defused XML parse. A mail is opened first and each report-like attachment is tried in turn; the
first that reads as a report wins, else the first attachment's refusal is the answer.
"""

from __future__ import annotations

from postwire.dmarc.containers import Container, sniff, unpack
from postwire.dmarc.errors import EMPTY, TOO_LARGE, InvalidReport
from postwire.dmarc.limits import DEFAULT_LIMITS, MIB, Limits, UnpackBudget
from postwire.dmarc.model import AggregateReport
from postwire.dmarc.report_mail import report_attachments
from postwire.dmarc.xml_report import read_report_xml


def parse_report(data: bytes, content_type: str | None = None, *,
                 limits: Limits = DEFAULT_LIMITS) -> AggregateReport:
    """The DMARC aggregate report in ``data``: XML, gzip, zip, or a whole report mail.

    ``content_type`` is the type the sender declared (application/xml, application/gzip,
    application/zip, message/rfc822, ...); the bytes themselves decide where they are unambiguous.
    Raises `InvalidReport` with a machine ``code`` and a one-line message for anything else.
    """
    if len(data) > limits.max_input_bytes:
        raise InvalidReport(TOO_LARGE, f"the report is {len(data)} bytes; at most "
                            f"{limits.max_input_bytes // MIB} MiB are accepted")
    if not data.strip():
        raise InvalidReport(EMPTY, "the report is empty")
    budget = UnpackBudget(limits)
    if sniff(data, content_type) is Container.MAIL:
        return _from_mail(data, budget, limits)
    return read_report_xml(unpack(data, budget, limits), limits)


def _from_mail(data: bytes, budget: UnpackBudget, limits: Limits) -> AggregateReport:
    first_error: InvalidReport | None = None
    for attachment in report_attachments(data, limits):
        try:
            return read_report_xml(unpack(attachment, budget, limits), limits)
        except InvalidReport as exc:
            first_error = first_error or exc
    assert first_error is not None  # report_attachments returns at least one candidate or raises
    raise first_error
