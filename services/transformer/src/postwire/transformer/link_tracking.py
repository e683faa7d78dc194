"""Click and open tracking for one HTML document: placeholders in ``<a href>`` and an open pixel.

Every ``<a href>`` whose URL is http(s) becomes ``click_url_prefix + placeholder(nonce, i)``, ``i`` being
the link's index in the returned ``links`` (each occurrence gets its own index); the open pixel
``<img src="open_url_prefix + placeholder(nonce, OPEN)">`` goes just before ``</body>``. The sender
later swaps the placeholders for per-recipient tokens (:mod:`postwire.core.tracking`).

The document is not re-serialised: :class:`html.parser.HTMLParser` only *locates* the ``<a>`` start
tags, the ``</body>`` end tag and the visible text of each link (it skips comments, ``<script>`` and
``<style>``), and the new values are spliced into the original text. The output differs from the input
only in the rewritten ``href`` values (an unquoted one gets double quotes) and the pixel.

Left alone: ``mailto:``, ``tel:``, ``#anchors``, relative and other non-http(s) URLs; links with the
opt-out attribute ``data-postwire-notrack``; links inside HTML comments (so also Outlook's
``<!--[if mso]>`` VML buttons); with ``prevent_scam``, links whose visible text is itself a URL or a
domain (a recipient who sees a URL must land exactly there); and every link after the first
:data:`~postwire.core.tracking.MAX_LINKS` of a message. In a template (``untracked`` matches its tag
tokens): links whose URL holds a tag, since a tracking link must never carry template syntax and the
URL is only known per recipient; with ``prevent_scam`` also links whose visible text holds a tag, since
it may render as an address.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field
from html.entities import html5 as _HTML5_ENTITIES
from html.parser import HTMLParser
from typing import Final

from postwire.core.tracking import MAX_LINKS, OPEN, placeholder

NOTRACK_ATTRIBUTE: Final = "data-postwire-notrack"
_NONCE: Final = re.compile(r"[0-9a-f]{16}")
_URL_PREFIX: Final = re.compile(
    r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:[/?#][!-~]*)?", re.IGNORECASE
)
_PREFIX_FORBIDDEN: Final = frozenset("\"'<>\\`")
_HTTP_URL: Final = re.compile(r"https?://", re.IGNORECASE)
_URL_STRIP: Final = " \t\n\r\f"  # HTML's ASCII white space, trimmed from attribute URLs
_URL_DROP: Final = re.compile(r"[\t\n\r]")  # tab and newline are removed anywhere in a URL (WHATWG)
# The attribute grammar of html.parser (attrfind_tolerant), to find the raw value of href in a start tag.
_TAG_NAME: Final = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*(?:\s|/(?!>))*")
_ATTRIBUTE: Final = re.compile(
    r"((?<=['\"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|\"[^\"]*\"|(?!['\"])[^>\s]*))?(?:\s|/(?!>))*"
)
_CHARREF: Final = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")
# Visible text that reads as an address: scheme://…, www.…, or the whole text a host name [+ path].
_SCHEME_URL: Final = re.compile(r"[a-z][a-z0-9+.-]*://\S", re.IGNORECASE)
_WWW: Final = re.compile(r"(?<![\w-])www\d{0,3}\.[^\W_]", re.IGNORECASE)
_HOST: Final = re.compile(
    r"(?:(?:[^\W_](?:[\w-]*[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})|[0-9]{1,3}(?:\.[0-9]{1,3}){3})"
    r"\.?(?::[0-9]{1,5})?(?:[/?#]\S*)?",
    re.IGNORECASE,
)
_PIXEL: Final = (
    '<img src="{src}" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px" />'
)


class BadTrackingOptions(ValueError):
    """A nonce or URL prefix the placeholders cannot be built from."""


@dataclass(frozen=True)
class TrackingOptions:
    """What to track. A prefix of None turns that kind of tracking off (picklable for the worker pool)."""

    nonce: str
    click_url_prefix: str | None = None
    open_url_prefix: str | None = None
    prevent_scam: bool = False

    def __post_init__(self) -> None:
        if not _NONCE.fullmatch(self.nonce):
            raise BadTrackingOptions("nonce must be 16 lower-case hex digits ([0-9a-f]{16})")
        for name in ("click_url_prefix", "open_url_prefix"):
            prefix = getattr(self, name)
            if prefix is not None and not _valid_prefix(prefix):
                raise BadTrackingOptions(
                    f"{name} must be an absolute http(s) URL in printable ASCII without quotes or "
                    f"spaces, got {prefix!r}"
                )

    @property
    def placeholders(self) -> re.Pattern[bytes]:
        """Every placeholder of this nonce, as :func:`postwire.core.tracking.personalise` finds them."""
        return re.compile(rb"PWT" + self.nonce.encode("ascii") + rb"x(?:[0-9]{1,5}|o)Z")


def _valid_prefix(prefix: str) -> bool:
    return bool(_URL_PREFIX.fullmatch(prefix)) and not _PREFIX_FORBIDDEN.intersection(prefix)


@dataclass(frozen=True)
class TrackedHtml:
    """The rewritten document, the original URL of each click placeholder by index, and the pixel flag."""

    html: str
    links: tuple[str, ...]
    open_pixel: bool


def track_html(
    document: str,
    options: TrackingOptions,
    first_index: int = 0,
    *,
    untracked: re.Pattern[str] | None = None,
) -> TrackedHtml:
    """Rewrite the links of ``document`` to click placeholders and add the open pixel, as configured.

    Link indexes start at ``first_index`` (the links already taken by earlier HTML parts of the same
    message); no index reaches :data:`~postwire.core.tracking.MAX_LINKS`, later links stay as they are.
    A link whose URL ``untracked`` finds something in (a template's tag) stays as it is.
    """
    scanner = _Scanner(document, collect_text=options.prevent_scam)
    scanner.feed(document)
    scanner.close()
    edits: list[tuple[int, int, str]] = []
    links: list[str] = []
    if options.click_url_prefix is not None:
        prefix = html.escape(options.click_url_prefix, quote=True)
        for anchor in scanner.anchors:
            if first_index + len(links) >= MAX_LINKS:
                break
            url = _tracked_url(anchor, options.prevent_scam)
            if url is None or (untracked is not None and _holds(anchor, untracked, options.prevent_scam)):
                continue
            value = prefix + placeholder(options.nonce, first_index + len(links))
            edits.append((anchor.start, anchor.end, value if anchor.quoted else f'"{value}"'))
            links.append(url)
    open_pixel = options.open_url_prefix is not None
    if options.open_url_prefix is not None:
        src = html.escape(options.open_url_prefix, quote=True) + placeholder(options.nonce, OPEN)
        at = scanner.body_end if scanner.body_end is not None else len(document.rstrip())
        edits.append((at, at, _PIXEL.format(src=src)))
    if not edits:
        return TrackedHtml(document, (), False)
    pieces: list[str] = []
    cursor = 0
    for start, end, text in sorted(edits, key=lambda edit: edit[0]):
        pieces += [document[cursor:start], text]
        cursor = end
    pieces.append(document[cursor:])
    return TrackedHtml("".join(pieces), tuple(links), open_pixel)


@dataclass
class _Anchor:
    start: int  # the raw href value in the document: inside the quotes when quoted
    end: int
    quoted: bool
    raw_value: str
    notrack: bool
    text: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # inside the link (with prevent_scam only)


def _holds(anchor: _Anchor, pattern: re.Pattern[str], prevent_scam: bool) -> bool:
    """Whether the link's URL, or with ``prevent_scam`` its visible text, holds what ``pattern`` finds."""
    if pattern.search(anchor.raw_value):
        return True
    return prevent_scam and any(pattern.search(part) for part in (*anchor.text, *anchor.comments))


def _tracked_url(anchor: _Anchor, prevent_scam: bool) -> str | None:
    """The URL a click placeholder will redirect to, or None when this link must stay as it is."""
    if anchor.notrack:
        return None
    url = _URL_DROP.sub("", unescape_attribute(anchor.raw_value).strip(_URL_STRIP))
    if not _HTTP_URL.match(url):
        return None
    if prevent_scam and looks_like_url("".join(anchor.text)):
        return None
    return url


class _Scanner(HTMLParser):
    """Finds the ``<a href>`` tags (with their visible text) and the last ``</body>``, by offset."""

    def __init__(self, document: str, collect_text: bool) -> None:
        super().__init__(convert_charrefs=True)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", document)]
        self._document = document
        self._collect_text = collect_text
        self._open: _Anchor | None = None
        self.anchors: list[_Anchor] = []
        self.body_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()  # html.parser counts lines by "\n" only, like _line_starts
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        self._open = None  # an <a> start tag ends any open link (HTML has no nested links)
        raw = self.get_starttag_text()
        start = self._offset()
        if raw is None or not self._document.startswith(raw, start):
            return
        anchor = _find_href(raw, start)
        if anchor is not None:
            self.anchors.append(anchor)
            self._open = anchor if self._collect_text else None

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)  # "/>" means nothing on an HTML element: <a ... /> opens a link

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None
        elif tag == "body":
            self.body_end = self._offset()

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.text.append(data)

    def handle_comment(self, data: str) -> None:
        if self._open is not None:
            self._open.comments.append(data)

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        """``<![name[`` with a name _markupbase does not know raises AssertionError (Python < 3.13);
        browsers read any ``<![...>`` outside foreign content as a bogus comment, so do that."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            return self.parse_bogus_comment(i)


def _find_href(tag: str, offset: int) -> _Anchor | None:
    """The first href attribute of a start tag (its raw value and where it is), None without one."""
    name = _TAG_NAME.match(tag)
    if name is None:
        return None
    pos = name.end()
    href: tuple[int, int, bool, str] | None = None
    notrack = False
    while pos < len(tag):
        m = _ATTRIBUTE.match(tag, pos)
        if m is None:
            break
        attr = m.group(1).lower()
        notrack = notrack or attr == NOTRACK_ATTRIBUTE
        value = m.group(3)
        if attr == "href" and href is None and value:
            quoted = value[0] in "'\"" and len(value) >= 2 and value[-1] == value[0]
            start, end = m.span(3)
            if quoted:
                start, end = start + 1, end - 1
            href = (offset + start, offset + end, quoted, tag[start:end])
        pos = m.end()
    if href is None:
        return None
    return _Anchor(href[0], href[1], href[2], href[3], notrack)


def unescape_attribute(value: str) -> str:
    """Decode character references the way HTML does inside an attribute value.

    Unlike :func:`html.unescape`, a named reference without ";" followed by "=" or a letter or digit is
    left as it is, so ``?a=1&copy=2`` keeps its ``&copy`` (browsers do the same).
    """

    def decode(m: re.Match[str]) -> str:
        ref = m.group(0)
        if ref[1] == "#":
            return html.unescape(ref)
        name = m.group(1)
        if name.endswith(";"):
            return _HTML5_ENTITIES.get(name, ref)
        if name in _HTML5_ENTITIES and value[m.end() : m.end() + 1] != "=":  # a legacy name, e.g. &amp
            return _HTML5_ENTITIES[name]
        return ref

    return _CHARREF.sub(decode, value) if "&" in value else value


def looks_like_url(text: str) -> bool:
    """Whether link text shows an address: a ``scheme://`` or ``www.`` anywhere, or the whole text a host
    name or IP address, optionally with a port and a path (``bank.example/login``)."""
    visible = "".join(c for c in text if unicodedata.category(c) != "Cf")  # zero-width characters
    visible = " ".join(visible.split())
    if _SCHEME_URL.search(visible) or _WWW.search(visible):
        return True
    return bool(_HOST.fullmatch(visible.strip("()[]<>\"'.,;:!?")))
