"""`InvalidReport`: why a submitted file is not a DMARC aggregate report we will store.

Every refusal carries a machine code (for the API's 422 body and for metrics) and a one-line message
for the person who sent the file. The codes are the constants below, so callers and tests compare
against the same names.
"""

from __future__ import annotations

EMPTY = "empty"
TOO_LARGE = "too_large"
ZIP_BOMB = "zip_bomb"
BAD_ARCHIVE = "bad_archive"
ENCRYPTED_ARCHIVE = "encrypted_archive"
NESTED_ARCHIVE = "nested_archive"
NOT_XML = "not_xml"
ENTITY_EXPANSION = "entity_expansion"
TOO_DEEP = "too_deep"
TOO_MANY_RECORDS = "too_many_records"
NOT_AGGREGATE_REPORT = "not_aggregate_report"
FAILURE_REPORT = "failure_report"
TLS_REPORT = "tls_report"
NO_REPORT_ATTACHMENT = "no_report_attachment"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"

CODES = frozenset({
    EMPTY, TOO_LARGE, ZIP_BOMB, BAD_ARCHIVE, ENCRYPTED_ARCHIVE, NESTED_ARCHIVE, NOT_XML, ENTITY_EXPANSION,
    TOO_DEEP, TOO_MANY_RECORDS, NOT_AGGREGATE_REPORT, FAILURE_REPORT, TLS_REPORT, NO_REPORT_ATTACHMENT,
    MISSING_FIELD, INVALID_FIELD,
})


class InvalidReport(ValueError):
    """Not a valid DMARC aggregate report: ``code`` says which way, ``message`` says it in words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"InvalidReport({self.code!r}, {self.message!r})"
