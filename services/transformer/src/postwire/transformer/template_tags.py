"""Keeps the tags of a template (postwire.personalisation) intact while its HTML is parsed, inlined and
tracked, so the CSS of a template is inlined once and not once per recipient.

:func:`protect` replaces each tag by a token ``PWTPL<nonce>x<n>Z`` that the HTML parsers and the
inliners leave alone; :func:`restore` puts each tag's exact source back and returns None unless every
token came back exactly once and in order (an inliner that copied a token into several elements, or
dropped it, would otherwise change the template). The nonce is secret or derived from the HTML, so no
customer text can hold a token.

Which form a token takes depends on where its tag sits, found by a small scanner that follows the
states of the HTML tokenizer (not a parser):

- **text**: an HTML comment ``<!--TOKEN-->``. A parser moves text out of a table (foster parenting) but
  leaves comments where they are, so a ``{foreach}`` between ``<tr>`` elements stays there. Except the
  first tag of a fragment when nothing before it starts the body: bare, as text (see ``before_body``);
- **a comment** (Outlook's ``<!--[if mso]>`` included), **an attribute value** (quoted or not), **the
  content of a raw-text element** (``style``, ``script``, ``title``, ``textarea``, ...): the bare token,
  letters and digits that no escaping changes (a comment in ``<title>`` would come back as ``&lt;!--``);
- **tag markup** (a tag name, an attribute name, between attributes, an end tag, a doctype): nothing
  survives there (the inliner rewrites tags and reorders attributes), so the part cannot be protected.

The serializer escapes ``&`` as ``&amp;``; the tag itself comes back as written anyway, and an ``&``
written right before a tag (``&{$entity};``, ``?a=1&{$key}=2``) is put back as written too, since the
rendered value may complete a character reference.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Final, Literal

from postwire.personalisation import TemplateSyntaxError, has_tags, tag_spans

_NONCE: Final = re.compile(r"[0-9a-f]{16}")
# the start of a character reference right before a tag: "&", "&#", "&am"
_REF_START: Final = re.compile(r"&[#A-Za-z0-9]*\Z")
_MARKUP: Final = re.compile(r"<[A-Za-z/!?]")  # where the tokenizer leaves the text (data) state
_TAG_NAME: Final = re.compile(r"[^\t\n\f\r />]*")
_BEFORE_ATTRIBUTE: Final = re.compile(r"[\t\n\f\r /]*")
_ATTRIBUTE_NAME: Final = re.compile(r"[^\t\n\f\r />][^\t\n\f\r />=]*")
_SPACE: Final = re.compile(r"[\t\n\f\r ]*")
_UNQUOTED: Final = re.compile(r"[^\t\n\f\r >]*")
_COMMENT_END: Final = re.compile(r"--!?>")
_LETTER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# elements whose content is not markup: raw text and RCDATA (noscript: parsers run with scripting on)
_RAW_TEXT: Final = frozenset(
    {"style", "script", "xmp", "iframe", "noembed", "noframes", "noscript", "title", "textarea"}
)
# the end tag that closes raw text: "</name" then white space, "/" or ">", in any case
_RAW_TEXT_END: Final = {name: re.compile(f"</{name}[\t\n\f\r />]", re.IGNORECASE) for name in _RAW_TEXT}
_Kind = Literal["markup", "bare"]
# start tags a parser puts in <head> when they come first: they do not start the body
_HEAD_ELEMENTS: Final = frozenset(
    {"style", "title", "meta", "link", "script", "base", "noscript", "template", "noframes"}
)
_WHITE_SPACE: Final = "\t\n\f\r "


class BadTemplateOptions(ValueError):
    """A nonce the tokens cannot be built from."""


@dataclass(frozen=True)
class TemplateOptions:
    """The HTML parts are templates. ``nonce``: 16 hex digits for the tokens; None derives one from each
    part's HTML (picklable for the worker pool)."""

    nonce: str | None = None

    def __post_init__(self) -> None:
        if self.nonce is not None and not _NONCE.fullmatch(self.nonce):
            raise BadTemplateOptions("nonce must be 16 lower-case hex digits ([0-9a-f]{16})")

    def nonce_for(self, html: str) -> str:
        return self.nonce if self.nonce is not None else derive_nonce(html)


def derive_nonce(html: str) -> str:
    """A nonce from the HTML itself: text cannot hold a token built from its own hash."""
    return hashlib.sha256(html.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def token(nonce: str, index: int) -> str:
    return f"PWTPL{nonce}x{index}Z"


@dataclass(frozen=True)
class Protected:
    """HTML with each tag replaced by a token, and what :func:`restore` needs to put them back."""

    html: str
    nonce: str
    tags: tuple[str, ...]  # the source of each tag, by token index
    commented: tuple[bool, ...]  # the token stands as <!--TOKEN--> (text) rather than bare
    ref_starts: tuple[str, ...]  # "&..." written right before the tag, else ""

    @cached_property
    def tokens(self) -> re.Pattern[str]:
        """Any token of this nonce (a link whose URL holds one is not tracked)."""
        return re.compile("PWTPL" + self.nonce + r"x([0-9]{1,9})Z")

    @cached_property
    def implied_tbody(self) -> re.Pattern[str]:
        """A ``<table>`` start tag as html5ever writes it (values in double quotes), then white space and
        text tokens only, then ``<tbody>``."""
        text_token = "<!--PWTPL" + self.nonce + "x[0-9]{1,9}Z-->"
        return re.compile(r'(<table(?:\s[^>"]*(?:"[^"]*"[^>"]*)*)?>)((?:\s*' + text_token + r")+\s*)<tbody>")


def protect(html: str, nonce: str) -> Protected | None:
    """``html`` with its template tags replaced by tokens; None when a tag sits where no token survives
    (tag markup), when the template does not lex, or when the text already holds this nonce's tokens."""
    if not has_tags(html):
        return Protected(html, nonce, (), (), ())
    try:
        spans = tag_spans(html)
    except TemplateSyntaxError:
        return None  # it cannot be rendered either; leave it for the renderer to report
    if not spans:
        return Protected(html, nonce, (), (), ())
    if "PWTPL" + nonce in html:
        return None
    pieces: list[str] = []
    starts: list[int] = []
    ref_starts: list[str] = []
    cursor = length = 0
    for index, (start, end) in enumerate(spans):
        before = html[cursor:start]
        ref = _REF_START.search(before)
        ref_starts.append("" if ref is None else ref.group())
        bare = token(nonce, index)
        pieces += [before, bare]
        starts.append(length + len(before))
        length += len(before) + len(bare)
        cursor = end
    pieces.append(html[cursor:])
    scan = _Scan("".join(pieces))
    kinds = [scan.kind_at(start) for start in starts]
    if "markup" in kinds:
        return None
    commented = [kind == "text" for kind in kinds]
    if True in commented and scan.before_body(starts[commented.index(True)]):
        commented[commented.index(True)] = False
    for index, is_text in enumerate(commented):
        if is_text:
            pieces[2 * index + 1] = f"<!--{pieces[2 * index + 1]}-->"
    tags = tuple(html[start:end] for start, end in spans)
    return Protected("".join(pieces), nonce, tags, tuple(commented), tuple(ref_starts))


def restore(html: str, protected: Protected) -> str | None:
    """``html`` (``protected.html`` after inlining and tracking) with each token replaced by its tag's
    exact source; None unless every token is there exactly once, in order and in its form, and the
    result read as a template has exactly the original tags.

    html5ever puts the ``<tbody>`` it implies for a table's first row after the comments before that
    row, so ``<table>{foreach …}<tr>`` would come back as ``<table>{foreach …}<tbody><tr>`` and repeat
    the ``<tbody>`` per row; when the template writes no ``<tbody>`` of its own, that one goes back
    before the tokens, right after ``<table>``."""
    if "<tbody" in html and "<tbody" not in protected.html.lower():
        html = protected.implied_tbody.sub(r"\1<tbody>\2", html)
    pieces: list[str] = []
    cursor = 0
    expected = 0
    for match in protected.tokens.finditer(html):
        if match.group(1) != str(expected) or expected >= len(protected.tags):
            return None
        start, end = match.span()
        if protected.commented[expected]:
            if html[start - 4 : start] != "<!--" or html[end : end + 3] != "-->" or start - 4 < cursor:
                return None
            start, end = start - 4, end + 3
        tag = protected.tags[expected]
        ref = protected.ref_starts[expected]
        escaped = "&amp;" + ref[1:]
        if ref and start - len(escaped) >= cursor and html.startswith(escaped, start - len(escaped)):
            start, tag = start - len(escaped), ref + tag
        pieces += [html[cursor:start], tag]
        cursor = end
        expected += 1
    if expected != len(protected.tags):
        return None
    pieces.append(html[cursor:])
    restored = "".join(pieces)
    try:  # the inliner may have made new tags: "&#123;$x}" decoded, "{<style>…</style>$x}" joined
        if [restored[start:end] for start, end in tag_spans(restored)] != list(protected.tags):
            return None
    except TemplateSyntaxError:
        return None
    return restored


class _Scan:
    """Where a document is not text, by the HTML tokenizer's states, without building anything."""

    def __init__(self, doc: str) -> None:
        self.doc = doc
        self.start_tags: list[tuple[int, str]] = []  # (offset, lower-case name)
        self.regions = _regions(doc, self.start_tags)  # sorted, disjoint, all that is not text
        self._region_starts = [region[0] for region in self.regions]

    def kind_at(self, position: int) -> Literal["text", "markup", "bare"]:
        """What the tokenizer reads at ``position``: text, markup, or characters it keeps as they are (a
        comment, an attribute value, raw text)."""
        at = bisect.bisect_right(self._region_starts, position) - 1
        if at >= 0 and self.regions[at][0] <= position < self.regions[at][1]:
            return self.regions[at][2]
        return "text"

    def before_body(self, position: int) -> bool:
        """Whether ``position`` is in a fragment (no html, head or body tag, no doctype) before anything
        that starts its body. A comment there would stay before the ``<html>`` the parser adds, which
        then drops the white space after it; text (the rendered tag) starts the body instead, so a tag
        there is written bare, as text."""
        if any(name in ("html", "head", "body") for _, name in self.start_tags):
            return False
        if any(self.doc.startswith("<!", start) and kind == "markup" for start, _, kind in self.regions):
            return False  # a doctype
        if any(at < position and name not in _HEAD_ELEMENTS for at, name in self.start_tags):
            return False
        cursor = 0
        for start, end, _ in self.regions:
            if start >= position:
                break
            if self.doc[cursor:start].strip(_WHITE_SPACE):
                return False
            cursor = end
        return not self.doc[cursor:position].strip(_WHITE_SPACE)


def _regions(doc: str, start_tags: list[tuple[int, str]]) -> list[tuple[int, int, _Kind]]:
    """The sorted, disjoint spans of ``doc`` that are not text, by kind, and each start tag into
    ``start_tags``. Script's escape states and foreign content's CDATA are left out: a token they would
    move does not come back where it was, and restore then refuses."""
    regions: list[tuple[int, int, _Kind]] = []
    size = len(doc)
    pos = 0
    while (found := _MARKUP.search(doc, pos)) is not None:
        lt = found.start()
        after = doc[lt + 1]
        if after in _LETTER:
            end, name = _tag(doc, lt, lt + 1, regions, values=True)
            start_tags.append((lt, name))
            pos = end
            if name in _RAW_TEXT or name == "plaintext":
                close = None if name == "plaintext" else _RAW_TEXT_END[name].search(doc, end)
                pos = size if close is None else close.start()
                regions.append((end, pos, "bare"))
        elif after == "/":
            following = doc[lt + 2 : lt + 3]
            if following in _LETTER:
                pos, _ = _tag(doc, lt, lt + 2, regions, values=False)
            elif following == ">":  # "</>" is dropped
                regions.append((lt, lt + 3, "markup"))
                pos = lt + 3
            else:
                pos = _bogus_comment(doc, lt, regions)
        elif doc.startswith("<!--", lt):
            body = lt + 4
            if doc.startswith(">", body):
                pos = body + 1
            elif doc.startswith("->", body):
                pos = body + 2
            else:
                close_comment = _COMMENT_END.search(doc, body)
                pos = size if close_comment is None else close_comment.end()
            regions.append((lt, pos, "bare"))
        elif after == "!" and doc[lt + 2 : lt + 9].lower() == "doctype":
            close_doctype = doc.find(">", lt)
            pos = size if close_doctype < 0 else close_doctype + 1
            regions.append((lt, pos, "markup"))
        else:  # "<!" or "<?" that is not a comment: a bogus comment up to ">"
            pos = _bogus_comment(doc, lt, regions)
    return regions


def _bogus_comment(doc: str, lt: int, regions: list[tuple[int, int, _Kind]]) -> int:
    close = doc.find(">", lt)
    end = len(doc) if close < 0 else close + 1
    regions.append((lt, end, "bare"))
    return end


def _tag(
    doc: str, lt: int, name_at: int, regions: list[tuple[int, int, _Kind]], *, values: bool
) -> tuple[int, str]:
    """Reads a start tag (or, without ``values``, an end tag: all of it markup) from its ``<``; returns
    where it ends and its name in lower case. Attribute values are "bare", everything else "markup"."""
    size = len(doc)
    name_end = _match_end(_TAG_NAME, doc, name_at)
    pos = name_end
    mark = lt  # where the markup not yet added to regions starts
    while True:
        pos = _match_end(_BEFORE_ATTRIBUTE, doc, pos)
        if pos >= size or doc[pos] == ">":
            break
        pos = _match_end(_SPACE, doc, _match_end(_ATTRIBUTE_NAME, doc, pos))
        if not doc.startswith("=", pos):
            continue
        pos = _match_end(_SPACE, doc, pos + 1)
        quote = doc[pos : pos + 1]
        if quote in ('"', "'"):
            close = doc.find(quote, pos + 1)
            value_start, value_end = pos + 1, size if close < 0 else close
            pos = min(value_end + 1, size)
        elif quote in (">", ""):
            continue
        else:
            value_start = pos
            value_end = pos = _match_end(_UNQUOTED, doc, pos)
        if values:
            regions += [(mark, value_start, "markup"), (value_start, value_end, "bare")]
            mark = value_end
    end = min(pos + 1, size)
    regions.append((mark, end, "markup"))
    return end, doc[name_at:name_end].lower()


def _match_end(pattern: re.Pattern[str], doc: str, pos: int) -> int:
    match = pattern.match(doc, pos)
    return pos if match is None else match.end()
