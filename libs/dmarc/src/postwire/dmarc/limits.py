"""The bounds on what one report may cost to read, and the running count that enforces them.

A report arrives from anyone who can send mail or call the API, so every size is capped before the
work it would cause: the bytes as sent, the bytes after unpacking (counted while inflating, so a bomb
is stopped at the limit and never inflated whole), the zip members, the archive nesting, the XML depth
and the number of records. Real reports are far below all of them: a big reporter's daily report is a
few MB of XML.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwire.dmarc.errors import ZIP_BOMB, InvalidReport

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one report may use; the defaults are the service's, tests and benchmarks may lower them."""

    max_input_bytes: int = 10 * MIB
    max_unpacked_bytes: int = 100 * MIB
    max_records: int = 1_000_000
    max_xml_depth: int = 32          # a report nests 5 deep; extensions add a few
    max_zip_members: int = 16        # a report zip holds one file
    max_archive_nesting: int = 2     # an archive, and at most one more inside it
    max_mail_depth: int = 16         # nested multiparts and attached messages
    max_mail_parts: int = 500


DEFAULT_LIMITS = Limits()


class UnpackBudget:
    """Bytes still allowed out of decompression, shared by every layer of one report."""

    def __init__(self, limits: Limits) -> None:
        self.limit = limits.max_unpacked_bytes
        self.remaining = limits.max_unpacked_bytes

    def take(self, count: int) -> None:
        """Account for ``count`` more unpacked bytes; refuse the report once the total passes the limit."""
        self.remaining -= count
        if self.remaining < 0:
            raise InvalidReport(
                ZIP_BOMB,
                f"the report unpacks to more than {self.limit // MIB} MiB; refused before unpacking the rest",
            )
