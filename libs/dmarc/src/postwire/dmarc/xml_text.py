"""From report bytes to XML text: character decoding, and the repair tried on a broken document.

Decoding. A byte-order mark wins, then the encoding the XML declaration names, then UTF-8. Bytes that
are not valid in that encoding are read one by one as Windows-1252: reporters that do not write UTF-8
write their local 8-bit code page, so this keeps "Müller" readable rather than turning it into
replacement characters, and a single stray byte does not garble the valid UTF-8 around it. The text
then goes to the parser as ``str``, whose declaration expat ignores, so one path serves every encoding.

Repair (only after a strict parse failed). Two breakages recur in real reports: a value holding an
unescaped ``<`` or ``&`` (``<email><a@b.example></email>``), and junk wrapped around or after the
``<feedback>`` element (an unclosed ``<xs:schema>`` opener, a second document). The repair escapes
the text of known leaf elements and cuts the document down to its first ``<feedback>...</feedback>``.
It never adds markup, and the repaired text is parsed with the same DTD and entity refusal as any other.
"""

from __future__ import annotations

import codecs
import re

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")

# elements whose content is text in both schemas (dkim and spf are not: they hold results in auth_results)
_LEAVES = ("org_name", "email", "extra_contact_info", "report_id", "begin", "end", "error", "generator",
           "version", "domain", "adkim", "aspf", "p", "sp", "np", "pct", "fo", "testing", "discovery_method",
           "source_ip", "count", "disposition", "type", "comment", "envelope_to", "envelope_from",
           "header_from", "selector", "scope", "result", "human_result")
_LEAF_VALUE = re.compile(rf"<({'|'.join(_LEAVES)})>([^\n]{{0,1000}}?)</\1>")
_BARE_AMPERSAND = re.compile(r"&(?!(?:#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6}|amp|lt|gt|quot|apos);)")
_FEEDBACK_START = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?feedback[\s>/]")
_FEEDBACK_END = re.compile(r"</(?:[A-Za-z_][\w.-]*:)?feedback\s*>")


def decode_xml(data: bytes) -> str:
    """The document as text; never fails (see the module docstring for the order of guesses)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, errors="replace")
    return data.decode(_declared_codec(data), errors=_CP1252_FALLBACK)


def _declared_codec(data: bytes) -> str:
    """The codec the XML declaration names, when Python knows it and it is ASCII-compatible; else UTF-8."""
    match = _DECLARED_ENCODING.match(data[:300])
    if match is None:
        return "utf-8"
    try:
        name = codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return "utf-8"
    # a declaration we could read as ASCII cannot honestly name UTF-16/32
    return "utf-8" if name.startswith(("utf-16", "utf-32")) else name


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    """Bytes invalid in the document's encoding, read as Windows-1252 (Latin-1 where 1252 has holes), so a
    stray 8-bit byte costs one character and the valid UTF-8 around it is kept."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in bad), error.end


_CP1252_FALLBACK = "postwire.dmarc.cp1252"
codecs.register_error(_CP1252_FALLBACK, _cp1252_fallback)


def repair_xml(text: str) -> str | None:
    """The document cut to its first ``<feedback>`` element with leaf values escaped, or None without one."""
    start = _FEEDBACK_START.search(text)
    if start is None:
        return None
    end = _FEEDBACK_END.search(text, start.start())
    if end is None:
        return None
    return _LEAF_VALUE.sub(_escape_leaf, text[start.start():end.end()])


def _escape_leaf(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    value = _BARE_AMPERSAND.sub("&amp;", value).replace("<", "&lt;").replace(">", "&gt;")
    return f"<{name}>{value}</{name}>"
