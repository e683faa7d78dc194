"""What the bytes are (gzip, zip, XML, a mail, JSON) and the report document inside an archive.

Magic bytes decide, because reporters and mail clients label attachments loosely
(application/octet-stream, application/x-zip-compressed, a gzip called .zip); the declared content type
only breaks a tie the bytes leave open. Archives are inflated as streams against the shared
`UnpackBudget`, so a bomb stops at the limit instead of filling memory, and a zip is judged by its
directory (member count, declared sizes, encryption) before any member is inflated.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from enum import Enum

from postwire.dmarc.errors import BAD_ARCHIVE, ENCRYPTED_ARCHIVE, NESTED_ARCHIVE, ZIP_BOMB, InvalidReport
from postwire.dmarc.limits import MIB, Limits, UnpackBudget

_CHUNK = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive's directory
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# an RFC 5322 header field, or the "From " line of an mbox, at the very start of the data
_MAIL_START = re.compile(rb"^(?:From [^\r\n]*\r?\n)?[!-9;-~]{1,76}:[ \t]*[^\r\n]*\r?\n")
_REPORT_NAME = re.compile(r"\.(?:xml|xml\.gz|gz|zip)$", re.IGNORECASE)


class Container(Enum):
    GZIP = "gzip"
    ZIP = "zip"
    XML = "xml"
    MAIL = "mail"
    OTHER = "other"


MAIL_TYPES = frozenset({"message/rfc822", "message/global"})


def sniff(data: bytes, content_type: str | None = None) -> Container:
    """The kind of ``data``, by its first bytes; ``content_type`` decides only between a mail and other."""
    if data.startswith(_GZIP_MAGIC):
        return Container.GZIP
    if data.startswith(_ZIP_MAGICS):
        return Container.ZIP
    head = data[:1024]
    for bom in _BOMS:
        head = head.removeprefix(bom)
    if head.lstrip().startswith(b"<"):
        return Container.XML
    if _MAIL_START.match(head) or _media_type(content_type) in MAIL_TYPES:
        return Container.MAIL
    return Container.OTHER


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def unpack(data: bytes, budget: UnpackBudget, limits: Limits, nesting: int = 0) -> bytes:
    """The document inside ``data``: itself when it is no archive, else the inflated content, recursively
    up to ``limits.max_archive_nesting`` archives deep."""
    kind = sniff(data)
    if kind not in (Container.GZIP, Container.ZIP):
        return data
    if nesting >= limits.max_archive_nesting:
        raise InvalidReport(NESTED_ARCHIVE,
                            f"the report is an archive nested more than {limits.max_archive_nesting} deep")
    inner = gunzip(data, budget) if kind is Container.GZIP else unzip(data, budget, limits)
    return unpack(inner, budget, limits, nesting + 1)


def gunzip(data: bytes, budget: UnpackBudget) -> bytes:
    """Every gzip member in ``data`` inflated within ``budget``; trailing non-gzip bytes are ignored."""
    out = bytearray()
    rest = data
    while rest.startswith(_GZIP_MAGIC):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            _inflate(inflater, rest, out, budget)
        except zlib.error as exc:
            raise InvalidReport(BAD_ARCHIVE, f"the gzip data is corrupt: {exc}") from None
        if not inflater.eof:
            raise InvalidReport(BAD_ARCHIVE, "the gzip data is truncated")
        rest = inflater.unused_data
    return bytes(out)


def _inflate(inflater: zlib._Decompress, data: bytes, out: bytearray, budget: UnpackBudget) -> None:
    """Inflate in bounded steps: each call yields at most one chunk, counted before the next is made."""
    pending = data
    while pending and not inflater.eof:
        piece = inflater.decompress(pending, _CHUNK)
        budget.take(len(piece))
        out += piece
        pending = inflater.unconsumed_tail
    while not inflater.eof:
        piece = inflater.decompress(b"", _CHUNK)
        if not piece:
            break
        budget.take(len(piece))
        out += piece


def unzip(data: bytes, budget: UnpackBudget, limits: Limits) -> bytes:
    """The report member of a zip, inflated within ``budget`` after its directory has been checked."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise InvalidReport(BAD_ARCHIVE, f"the zip archive is unreadable: {exc}") from None
    with archive:
        member = _report_member(archive, limits)
        if member.flag_bits & 0x1:
            raise InvalidReport(ENCRYPTED_ARCHIVE, f"the zip member {member.filename!r} is encrypted")
        if member.file_size > budget.remaining:
            raise InvalidReport(
                ZIP_BOMB, f"the zip member {member.filename!r} declares {member.file_size} bytes unpacked, "
                f"more than the {budget.limit // MIB} MiB a report may unpack to")
        return _read_member(archive, member, budget)


def _report_member(archive: zipfile.ZipFile, limits: Limits) -> zipfile.ZipInfo:
    """The member that holds the report: the first named like one, else the only file."""
    infos = archive.infolist()
    if len(infos) > limits.max_zip_members:
        raise InvalidReport(ZIP_BOMB, f"the zip has {len(infos)} members; a report zip holds one")
    files = [info for info in infos if not info.is_dir()]
    named = [info for info in files if _REPORT_NAME.search(info.filename)]
    if named:
        return named[0]
    if len(files) == 1:
        return files[0]
    raise InvalidReport(BAD_ARCHIVE, "the zip holds no .xml, .xml.gz or .zip report file")


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: UnpackBudget) -> bytes:
    out = bytearray()
    try:
        with archive.open(member) as stream:
            while piece := stream.read(_CHUNK):
                budget.take(len(piece))
                out += piece
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InvalidReport(BAD_ARCHIVE, f"the zip member {member.filename!r} is unreadable: {exc}") from None
    return bytes(out)
