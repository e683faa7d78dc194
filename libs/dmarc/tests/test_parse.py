"""parse_report on the project's own fixtures (always run): each container, both schemas, the
normalisation, and every kind of refusal, hostile input included."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

import pytest

from postwire.dmarc import InvalidReport, Limits, parse_report
from postwire.dmarc import errors as codes
from postwire.testing.dmarc_files import report_mail, zipped

FIXTURES = Path(__file__).parent / "fixtures"
MIB = 1024 * 1024


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def refused(data: bytes, content_type: str | None = None, limits: Limits | None = None) -> str:
    with pytest.raises(InvalidReport) as caught:
        parse_report(data, content_type, limits=limits or Limits())
    assert caught.value.code in codes.CODES
    assert "\n" not in caught.value.message
    return caught.value.code


RFC7489_JSON = {
    "org_name": "Receiver.Example",
    "org_email": "noreply-dmarc@receiver.example",
    "report_id": "20181001.r1",
    "begin": "2018-10-01T00:00:00Z",
    "end": "2018-10-01T23:59:59Z",
    "domain": "sender.example",
    "policy": {"p": "quarantine", "sp": "quarantine", "adkim": "r", "aspf": "s", "pct": 50},
    "records": [
        {"source_ip": "192.0.2.10", "count": 12, "disposition": "none", "dkim": "pass", "spf": "fail",
         "header_from": "sender.example",
         "dkim_results": [{"domain": "sender.example", "selector": "s2018", "result": "pass"},
                          {"domain": "esp.example", "selector": "none", "result": "pass"}],
         "spf_results": [{"domain": "bounces.sender.example", "scope": "mfrom", "result": "fail"}]},
        {"source_ip": "2001:db8::25", "count": 3, "disposition": "quarantine", "dkim": "fail", "spf": "fail",
         "header_from": "sender.example", "dkim_results": [],
         "spf_results": [{"domain": "spoof.example", "scope": "helo", "result": "softfail"}]},
    ],
}


# --- what is accepted -----------------------------------------------------------------------------------

def test_rfc7489_report_as_the_api_shape() -> None:
    report = parse_report(fixture("rfc7489-report.xml"), "application/xml")
    assert report.as_json() == RFC7489_JSON
    assert report.schema == "rfc7489"


@pytest.mark.parametrize(("pack", "content_type"), [
    (lambda xml: xml, "text/xml"),
    (gzip.compress, "application/gzip"),
    (zipped, "application/zip"),
    (lambda xml: gzip.compress(zipped(xml)), "application/gzip"),       # one archive inside another
    (lambda xml: b"\xef\xbb\xbf  \n" + xml, None),                        # a BOM and blank lines first
])
def test_every_container_gives_the_same_report(pack: object, content_type: str | None) -> None:
    assert callable(pack)
    assert parse_report(pack(fixture("rfc7489-report.xml")), content_type).as_json() == RFC7489_JSON


def test_declared_type_does_not_override_the_bytes() -> None:
    """Reporters mislabel attachments: a gzip sent as application/zip still reads."""
    report = parse_report(gzip.compress(fixture("rfc7489-report.xml")), "application/zip")
    assert report.as_json() == RFC7489_JSON


@pytest.mark.parametrize(("subtype", "filename", "pack"), [
    ("zip", "receiver.example!sender.example!1538352000!1538438399.zip", zipped),
    ("gzip", "receiver.example!sender.example!1538352000!1538438399.xml.gz", gzip.compress),
    ("octet-stream", "report.xml.gz", gzip.compress),
])
def test_report_mail_with_attachment(subtype: str, filename: str, pack: object) -> None:
    assert callable(pack)
    mail = report_mail(pack(fixture("rfc7489-report.xml")), subtype, filename)
    assert b"Content-Transfer-Encoding: base64" in mail
    assert parse_report(mail, "message/rfc822").as_json() == RFC7489_JSON


def test_report_mail_forwarded_inside_another_mail() -> None:
    inner = report_mail(zipped(fixture("rfc7489-report.xml")), "zip", "report.zip")
    outer = EmailMessage()
    outer["From"] = "postmaster@sender.example"
    outer["Subject"] = "Fwd: Report Domain: sender.example"
    outer.set_content("Forwarding the report below.")
    outer.add_attachment(inner, maintype="message", subtype="rfc822")
    assert parse_report(outer.as_bytes()).as_json() == RFC7489_JSON


def test_rfc9990_report_keeps_np_and_the_new_fields() -> None:
    report = parse_report(fixture("rfc9990-report.xml"), "application/xml")
    assert report.schema == "rfc9990"
    assert report.generator == "Receiver Reporter 3.1"
    assert report.policy.as_json() == {"p": "reject", "sp": "reject", "adkim": "r", "aspf": "r", "pct": None,
                                       "np": "quarantine"}
    assert (report.policy.testing, report.policy.discovery_method) == ("y", "treewalk")
    first, second = report.records
    assert (first.disposition, first.envelope_to) == ("pass", "receiver.example")
    assert [(r.type, r.comment) for r in second.reasons] == [("mailing_list", "list.receiver.example")]
    assert second.as_json()["spf_results"] == [
        {"domain": "lists.example", "scope": "mfrom", "result": "pass"}]
    assert "np" not in parse_report(fixture("rfc7489-report.xml")).as_json()["policy"]


def test_policy_defaults_follow_the_rfcs() -> None:
    """RFC 7489 section 6.3: an absent sp is p, absent adkim/aspf are relaxed, an absent pct is 100. The
    parsedmarc labels agree on sp. They give pct null for RFC 9990 reports, and so do we: DMARCbis has no
    pct, and 100 would claim a sampling rate the domain never published."""
    xml = fixture("rfc7489-report.xml").replace(b"<pct>50</pct>", b"").replace(b"<adkim>R</adkim>", b"")
    policy = parse_report(xml).as_json()["policy"]
    assert policy == {"p": "quarantine", "sp": "quarantine", "adkim": "r", "aspf": "s", "pct": 100}
    assert parse_report(fixture("rfc9990-report.xml")).policy.pct is None


def test_dmarc_pass_counts_aligned_dkim_or_spf() -> None:
    report = parse_report(fixture("rfc7489-report.xml"))
    assert [r.dmarc_pass for r in report.records] == [True, False]
    assert (report.message_count, report.dmarc_pass_count) == (15, 12)


def test_empty_org_name_is_the_reporters_domain() -> None:
    xml = fixture("rfc7489-report.xml").replace(b"<org_name>Receiver.Example</org_name>", b"<org_name/>")
    report = parse_report(xml)
    assert (report.org_name, report.org_name_as_written) == ("receiver.example", "")


def test_non_utf8_bytes_are_read_as_windows_1252() -> None:
    xml = fixture("rfc7489-report.xml").replace(b"Receiver.Example", "Müller “AG”".encode("cp1252"))
    assert parse_report(xml).org_name == "Müller “AG”"
    declared = xml.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"').replace(
        "Müller “AG”".encode("cp1252"), "Müller".encode("latin-1"))
    assert parse_report(declared).org_name == "Müller"


def test_not_well_formed_values_are_read_leniently() -> None:
    """An unescaped '<' in a value and an unclosed wrapper element: repaired, still without entities."""
    xml = fixture("rfc7489-report.xml").replace(
        b"<email>noreply-dmarc@receiver.example</email>", b"<email><noreply-dmarc@receiver.example></email>")
    xml = xml.replace(b"<feedback>", b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">\n<feedback>')
    assert parse_report(xml).as_json() == RFC7489_JSON


# --- what is refused ------------------------------------------------------------------------------------

def test_failure_report_is_refused() -> None:
    assert refused(fixture("failure-report.eml"), "message/rfc822") == codes.FAILURE_REPORT


def test_tls_report_is_refused_raw_gzipped_and_mailed() -> None:
    tls = fixture("tls-report.json")
    assert refused(tls, "application/json") == codes.TLS_REPORT
    assert refused(gzip.compress(tls), "application/gzip") == codes.TLS_REPORT
    name = "receiver.example!sender.example!1718409600!001.json.gz"
    mail = report_mail(gzip.compress(tls), "tlsrpt+gzip", name)
    assert refused(mail, "message/rfc822") == codes.TLS_REPORT


@pytest.mark.parametrize("data", [b"", b"  \r\n\t "])
def test_empty_file_is_refused(data: bytes) -> None:
    assert refused(data, "application/xml") == codes.EMPTY


@pytest.mark.parametrize(("data", "code"), [
    (bytes(range(256)) * 4, codes.NOT_XML),
    (b"<html><body>hello</body></html>", codes.NOT_AGGREGATE_REPORT),
    (b"<feedback><report_metadata>", codes.NOT_XML),
    (b"From: a@b.example\nSubject: hi\n\njust text\n", codes.NO_REPORT_ATTACHMENT),
    (b"\x1f\x8b\x08\x00garbage", codes.BAD_ARCHIVE),
    (b"PK\x03\x04garbage", codes.BAD_ARCHIVE),
])
def test_what_is_not_a_report_is_refused(data: bytes, code: str) -> None:
    assert refused(data) == code


def test_missing_and_invalid_fields_are_refused() -> None:
    xml = fixture("rfc7489-report.xml")
    assert refused(xml.replace(b"<p>Quarantine</p>", b"")) == codes.MISSING_FIELD
    assert refused(xml.replace(b"1538352000", b"yesterday")) == codes.INVALID_FIELD
    assert refused(xml.replace(b"192.0.2.10", b"not-an-ip")) == codes.INVALID_FIELD


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>"""


def test_entity_expansion_is_refused() -> None:
    assert refused(BILLION_LAUGHS, "application/xml") == codes.ENTITY_EXPANSION
    assert refused(gzip.compress(BILLION_LAUGHS)) == codes.ENTITY_EXPANSION


def test_external_entity_and_bare_dtd_are_refused() -> None:
    external = (b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b"<feedback><report_metadata><org_name>&x;</org_name></report_metadata></feedback>")
    assert refused(external) == codes.ENTITY_EXPANSION
    bare_dtd = b'<!DOCTYPE feedback SYSTEM "http://dtd.example/x.dtd"><feedback/>'
    assert refused(bare_dtd) == codes.ENTITY_EXPANSION


def zeros_gzip(unpacked_mib: int) -> bytes:
    """A gzip of ``unpacked_mib`` MiB of zeros, compressed a MiB at a time so the test never holds it."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(MIB)
    return b"".join([*(packer.compress(chunk) for _ in range(unpacked_mib)), packer.flush()])


def test_gzip_bomb_is_refused_at_the_limit() -> None:
    bomb = zeros_gzip(200)
    assert len(bomb) < MIB          # small as sent: only the unpacked-size limit can catch it
    assert refused(bomb, "application/gzip") == codes.ZIP_BOMB


def _central_directory(data: bytes) -> int:
    return data.index(b"PK\x01\x02")


def test_zip_declaring_a_huge_member_is_refused_before_inflating() -> None:
    data = bytearray(zipped(fixture("rfc7489-report.xml")))
    at = _central_directory(data)
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)   # uncompressed size: 4 GiB
    assert refused(bytes(data), "application/zip") == codes.ZIP_BOMB


def test_zip_lying_about_its_size_is_not_inflated_past_the_declared_size() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.xml", bytes(20 * MIB))
    data = bytearray(buffer.getvalue())
    struct.pack_into("<I", data, _central_directory(data) + 24, 1000)
    assert refused(bytes(data)) == codes.BAD_ARCHIVE


def test_zip_with_too_many_members_or_an_encrypted_member_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(17):
            archive.writestr(f"part{n}.xml", b"<feedback/>")
    assert refused(buffer.getvalue()) == codes.ZIP_BOMB
    data = bytearray(zipped(fixture("rfc7489-report.xml")))
    at = _central_directory(data)
    struct.pack_into("<H", data, at + 8, struct.unpack_from("<H", data, at + 8)[0] | 0x1)
    assert refused(bytes(data)) == codes.ENCRYPTED_ARCHIVE


def test_archives_nest_one_level_at_most() -> None:
    xml = fixture("rfc7489-report.xml")
    assert refused(gzip.compress(gzip.compress(gzip.compress(xml)))) == codes.NESTED_ARCHIVE


def test_size_depth_and_record_limits() -> None:
    xml = fixture("rfc7489-report.xml")
    assert refused(xml, limits=Limits(max_input_bytes=1000)) == codes.TOO_LARGE
    assert refused(xml, limits=Limits(max_records=1)) == codes.TOO_MANY_RECORDS
    deep = b"<feedback>" + b"<x>" * 40 + b"</x>" * 40 + b"</feedback>"
    assert refused(deep) == codes.TOO_DEEP
