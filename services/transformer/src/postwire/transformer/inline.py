"""CSS inlining of one HTML document, with two engines and one safety policy: nothing is ever fetched.

css-inline (Rust, the default) does the selector matching; the cascade around it follows juice, the
reference email inliner (:mod:`postwire.transformer.css_sheet` splits the CSS, :mod:`postwire.transformer.
css_cascade` writes each element's style, see docs/inlining.md). premailer (Python + lxml + cssutils) is an
opt-in for senders that depend on its output; it ignores :class:`InlineOptions`. Both are
configured so that no stylesheet, @import or other resource is loaded from the network or the disk: the
transformer runs inside the cluster, and a customer's HTML must not be able to make it open connections.
At-rules such as @media, and rules such as a:hover, stay in a <style> block, so responsive rules still
override inline styles (when they say !important, as responsive email CSS does: inline styles are written
without !important so that they can be overridden).

Hostile documents: css-inline recurses once per nesting level somewhere in its native code, so a document
nested deeply enough overflows the stack of the thread running it (about 12 000 levels on a default 8 MB
stack). The transformer's workers run it on a 256 MB stack (:mod:`postwire.transformer.worker_pool`), and an
HTML part with more than :data:`MAX_HTML_TAGS` start tags is refused before either engine sees it: every
element a parser builds comes from a start tag or is implied by one (``<table><td>`` makes four), so
the depth stays far below what that stack holds (240 000 levels were measured to work). Nesting within
the limit can still be slow (html5ever checks scopes level by level); the per-message time limit stops
it. premailer's parser, libxml2, does not fail on documents beyond its own limits (256 levels, 10 MB of
text in one node) but silently drops what lies beyond them; that is detected and refused instead of
inlining a truncated document.
"""

from __future__ import annotations

import functools
import re
from typing import Final, NamedTuple

import css_inline

from postwire.transformer import code_blocks
from postwire.transformer.css_cascade import (
    ATTRIBUTE,
    JUICE_CONTROL,
    MARKER,
    MARKER_ID,
    VOID_ELEMENTS,
    CascadePlan,
    apply_cascade,
    build_plan,
)
from postwire.transformer.css_context import apply_in_context
from postwire.transformer.css_sheet import (
    CONTAINER,
    FONT_FACE,
    IGNORED,
    IMPORTANT,
    KEYFRAMES,
    LAYER,
    MEDIA,
    OTHER_AT_RULE,
    PSEUDO,
    Sheet,
    parse_sheet,
    rule_text,
    selector_kind,
    specificity,
    split_top_level,
)
from postwire.transformer.inline_options import DEFAULT_OPTIONS, InlineOptions

CSS_INLINE: Final = "css-inline"
PREMAILER: Final = "premailer"
ENGINES: Final = (CSS_INLINE, PREMAILER)
MAX_HTML_TAGS: Final = 120_000  # start tags in one document; more is refused (see the module doc)
_START_TAG: Final = re.compile(r"<[A-Za-z]")  # where a start tag can begin (in comments too: an upper bound)
_DATA_EMBED: Final = re.compile(r"\sdata-embed\b", re.I)
# elements whose content is text to an HTML parser (noscript: parsers run with scripting on) and that
# mail holds (xmp, noembed, noframes, plaintext are obsolete; iframe content is never shown)
_TEXT_ELEMENTS: Final = ("<title", "<script", "<textarea", "<noscript")
# a rule block with no block inside (a style rule, also inside @media), and juice's state pseudo-classes
_INNERMOST_BLOCK: Final = re.compile(r"([^{}]*)\{([^{}]*)\}")
_PSEUDO_CLASS: Final = re.compile(r":(?:hover|active|focus|visited|link)", re.I)
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# a style attribute that sets a custom property (its descendants may read it with var())
_OWN_CUSTOM_PROPERTY: Final = re.compile(r"""style\s*=\s*(?:"[^"]*--|'[^']*--|[^\s"'>]*--)""")
# in css-inline's output: comments and raw text (left alone), then a start tag (of a void element)
_NOT_MARKUP: Final = r"(<!--.*?-->|<(script|style|xmp|iframe|noembed|noframes|noscript)\b[^>]*>.*?</\2\s*>)"
_ATTRIBUTES: Final = f"{ATTRIBUTE}*"
_TAG: Final = re.compile(rf"{_NOT_MARKUP}|(<[A-Za-z][^\s/>]*{_ATTRIBUTES}\s*/?>)", re.S)
# juice parses with htmlparser2, which adds no <html>, <body> or <tbody>: an element the HTML5 parser
# implies is nobody juice styles (``* {...}``, ``table *``, ``body {...}``), so its rule markers are
# taken off again; an implied <html> keeps them (juice's ``:root`` matches a fragment's top elements, so
# its custom properties still apply), only its style attribute is dropped at the end
_IMPLIED: Final = ("body", "tbody")
_IMPLIED_TAG: Final = {
    name: re.compile(rf'<{name} style="(?:\s*{MARKER}[0-9]+:\s*1;?)*\s*">') for name in _IMPLIED
}
_IMPLIED_HTML: Final = re.compile(r'<html style="[^"]*">')
_VOID_TAG: Final = re.compile(
    rf"{_NOT_MARKUP}|(<(?:{'|'.join(sorted(VOID_ELEMENTS))}){_ATTRIBUTES})\s*>", re.S
)


class InlineError(ValueError):
    """The HTML or CSS could not be inlined (bad input or an unknown engine); the document is unusable."""


class HtmlTooComplex(InlineError):
    """The document exceeds a limit (tags, nesting, an engine's parser limits); it is refused, not cut."""


def check_html_limits(html: str) -> None:
    """Raise :class:`HtmlTooComplex` when ``html`` has more than :data:`MAX_HTML_TAGS` start tags."""
    if len(html) <= MAX_HTML_TAGS or html.count("<") <= MAX_HTML_TAGS:  # the common cases, no regex
        return
    for count, _ in enumerate(_START_TAG.finditer(html), start=1):
        if count > MAX_HTML_TAGS:
            raise HtmlTooComplex(f"the HTML has more than {MAX_HTML_TAGS} tags")


def inline_html(
    html: str, extra_css: str | None = None, engine: str = CSS_INLINE, *, options: InlineOptions | None = None
) -> str:
    """Return ``html`` with its <style> rules (and ``extra_css``) moved into style attributes.

    What cannot be inlined (@media, @font-face, a:hover...) is kept in a <style> block in <head>;
    ``options`` switches juice's behaviours on and off (the css-inline engine only). Raises
    :class:`InlineError` (:class:`HtmlTooComplex` for a document beyond the limits in the module doc).
    """
    if engine in ENGINES:
        check_html_limits(html)
    if engine == CSS_INLINE:
        return _inline_css_inline(html, extra_css, options or DEFAULT_OPTIONS)
    if engine == PREMAILER:
        # imported here: premailer, lxml and cssutils cost each worker some 20 MB, and it is opt-in
        from postwire.transformer.premailer_engine import inline_premailer

        return inline_premailer(html, extra_css)
    raise InlineError(f"unknown CSS engine {engine!r}; expected one of {', '.join(ENGINES)}")


class _Plan:
    """Everything derived from one document's CSS, reused while the same template is sent again.

    ``var_styles``: whether some element's own style uses var() (it is then resolved, see css_cascade).
    """

    def __init__(
        self, styles: tuple[str, ...], extra_css: str, options: InlineOptions, var_styles: bool
    ) -> None:
        sheets = [parse_sheet(css) for css in styles] if options.apply_style_tags else []
        extra = parse_sheet(extra_css) if extra_css else None
        self.cascade: CascadePlan = build_plan(
            [*sheets, *([extra] if extra else [])], options, var_styles=var_styles
        )
        kept = [text for css in styles for text in _kept(parse_sheet(css), options)]
        if not options.remove_style_tags:
            kept = list(styles)
        self.options, self.sheets = options, sheets
        self.extra_kept = (
            _kept(extra, options, extra=True) if extra and options.insert_preserved_extra_css else []
        )
        if options.add_important_to_pseudo_classes:
            kept = [_important_pseudo_classes(text) for text in kept]
        self.kept_css = _style_text([*kept, *self.extra_kept])
        self.inliner = css_inline.CSSInliner(
            inline_style_tags=False,  # the CSS goes in as marker rules (css_cascade), not as written
            keep_style_tags=False,  # what must stay is written back after the cascade
            keep_link_tags=True,  # a <link rel=stylesheet> stays for the client (web fonts), never followed
            load_remote_stylesheets=False,
            base_url=None,
            extra_css=self.cascade.marker_css or None,
        )


def _important_pseudo_classes(css: str) -> str:
    """juice's addImportantToPseudoClasses: each declaration of a rule whose selector has :hover,
    :active, :focus, :visited or :link made !important, so it beats the inlined styles it overrides."""
    return _INNERMOST_BLOCK.sub(_important_block, css) if ":" in css else css


def _important_block(match: re.Match[str]) -> str:
    prelude, body = match.groups()
    if _PSEUDO_CLASS.search(prelude) is None:
        return match.group()
    declarations = [
        text if IMPORTANT.search(text) else f"{text} !important"
        for part in split_top_level(body, ";")
        if (text := part.strip())
    ]
    return f"{prelude}{{ {'; '.join(declarations)}; }}" if declarations else match.group()


def _style_text(kept: list[str]) -> str:
    """The content of the <style> block that keeps ``kept``; ``</`` escaped, so it cannot end the block."""
    kept = sorted(kept, key=lambda text: not text.startswith("@import"))  # clients ignore a late @import
    return "\n".join(text for text in kept if text.strip()).replace("</", "<\\/")


def _not_inlined(plan: _Plan, marked: str) -> str:
    """juice's removeInlinedSelectors (with removeStyleTags off): the <style> blocks without the
    selectors that matched an element in ``marked``, what juice keeps (at-rules, rules whose first
    selector needs state, preservedSelectors) kept whole."""
    matched = {int(number) for number in MARKER_ID.findall(marked)}
    kept: list[str] = []
    first = 0
    for sheet in plan.sheets:
        kept += _remaining(sheet, first, matched, plan.options)
        first += len(sheet.selectors)
    if plan.options.add_important_to_pseudo_classes:
        kept = [_important_pseudo_classes(text) for text in kept]
    return _style_text([*kept, *plan.extra_kept])


def _remaining(sheet: Sheet, first: int, matched: set[int], options: InlineOptions) -> list[str]:
    """The rules of ``sheet`` (its rules numbered from ``first``) with the selectors in ``matched`` left
    out, and all it keeps, in its order."""
    pieces = [(kept.anchor, 0, kept.text) for kept in sheet.kept]
    written = {id(kept.body) for kept in sheet.kept if kept.body is not None}
    for start, stop in _rule_groups(sheet):
        selectors, body = sheet.selectors[start:stop], sheet.bodies[start]
        if id(body) in written:
            continue
        if not any(p in s for s in selectors for p in options.preserved_selectors):
            selectors = [s for n, s in enumerate(selectors, start=first + start) if n not in matched]
        if selectors:
            pieces.append((start, 1, rule_text(selectors, body)))
    return [text for _, _, text in sorted(pieces, key=lambda piece: piece[:2])]


def _rule_groups(sheet: Sheet) -> list[tuple[int, int]]:
    """(start, stop) of each run of inlinable selectors that share a body: one rule's selectors."""
    groups: list[tuple[int, int]] = []
    index = 0
    while index < len(sheet.selectors):
        body, start = sheet.bodies[index], index
        while index < len(sheet.selectors) and sheet.bodies[index] is body:
            index += 1
        groups.append((start, index))
    return groups


@functools.lru_cache(maxsize=16)
def _plan(styles: tuple[str, ...], extra_css: str, options: InlineOptions, var_styles: bool) -> _Plan:
    return _Plan(styles, extra_css, options, var_styles)


def clear_caches() -> None:
    """Forget every parsed stylesheet and plan, as in a fresh process (for benchmarks of the cold path)."""
    for cache in (_plan, parse_sheet, specificity, selector_kind):
        cache.cache_clear()


def _kept(sheet: Sheet, options: InlineOptions, extra: bool = False) -> list[str]:
    """The parts of ``sheet`` that stay in <style>, as ``options`` choose, in the sheet's order.

    From the extra CSS only the at-rules are kept, as juice's insertPreservedExtraCss does (its a:hover
    rules are dropped): juice is the reference senders compare with, and a state rule that matters
    belongs in the document's own <style>, which keeps it. Rules with one of juice's preservedSelectors
    are kept too (and inlined as well), and what a juice ignore comment set aside always is.
    """
    wanted = {
        MEDIA: options.preserve_media_queries,
        FONT_FACE: options.preserve_font_faces,
        KEYFRAMES: options.preserve_key_frames,
        CONTAINER: options.preserve_container_queries,
        LAYER: options.preserve_layers,
        PSEUDO: options.preserve_pseudos and not extra,
        OTHER_AT_RULE: True,
        IGNORED: True,
    }
    kept = [kept for kept in sheet.kept if wanted[kept.kind]]
    if not options.preserved_selectors:
        return [kept.text for kept in kept]
    pieces = [(kept.anchor, 0, kept.text) for kept in kept]
    written = {id(kept.body) for kept in kept if kept.body is not None}
    pieces += _preserved(sheet, options.preserved_selectors, written)
    return [text for _, _, text in sorted(pieces, key=lambda piece: piece[:2])]


def _preserved(sheet: Sheet, patterns: tuple[str, ...], written: set[int]) -> list[tuple[int, int, str]]:
    """(anchor, 1, text) of each inlinable rule with a selector holding one of ``patterns``, as juice's
    preservedSelectors matches them (by substring); ``written``: bodies of rules already kept."""
    out: list[tuple[int, int, str]] = []
    for start, stop in _rule_groups(sheet):
        selectors, body = sheet.selectors[start:stop], sheet.bodies[start]
        if id(body) not in written and any(p in s for s in selectors for p in patterns):
            out.append((start, 1, rule_text(selectors, body)))
    return out


class _StyleBlocks(NamedTuple):
    """The <style> elements of a document as an HTML parser finds them."""

    styles: tuple[str, ...]  # the CSS of each one to inline
    embedded: tuple[str, ...]  # whole <style data-embed> elements, kept as they are
    spans: tuple[tuple[int, int], ...]  # where each one to inline stands, start tag to end tag


def _style_blocks(html: str, lower: str) -> _StyleBlocks:
    """The <style> elements: not inside comments (``<!--[if mso]><style>`` is for Outlook alone), each
    ended by the first ``</style``."""
    styles: list[str] = []
    embedded: list[str] = []
    spans: list[tuple[int, int]] = []
    text_elements: _TextElements | None = None
    pos = 0  # ``lower`` is html.lower(), searched with str.find
    while (start := lower.find("<style", pos)) >= 0:
        comment = lower.rfind("<!--", pos, start)
        if comment >= 0 and lower.find("-->", comment + 4, start) < 0:  # this <style is commented out
            pos = lower.find("-->", start)
            if pos < 0:
                break
            continue
        text_elements = text_elements or _TextElements(lower, lower.rfind("<style"))
        if text_elements.contain(start):  # <title>Use <style></title>: text, not an element
            pos = start + 6
            continue
        tag_end = lower.find(">", start)
        if tag_end < 0:
            break
        end = lower.find("</style", tag_end)
        end = len(html) if end < 0 else end
        pos = end
        attributes, css = html[start + 6 : tag_end], html[tag_end + 1 : end]
        if attributes[:1] not in ("", " ", "\t", "\n", "\r", "\f", "/"):
            continue  # <styles>, <style-x>: another element
        if _DATA_EMBED.search(attributes):
            embedded.append(f"<style{_DATA_EMBED.sub('', attributes)}>{css}</style>")
        else:
            styles.append(css)
            close = lower.find(">", end)
            if close >= 0:  # an unterminated <style> is left to the parser
                spans.append((start, close + 1))
    return _StyleBlocks(tuple(styles), tuple(embedded), tuple(spans))


class _TextElements:
    """Whether a position is inside an element whose content a parser reads as text (``<title>``,
    ``<script>``, ``<textarea>``...), so that a ``<style`` there is neither inlined nor removed.

    Asked about positions in increasing order: each kind's openings and closings are found once.
    """

    def __init__(self, lower: str, limit: int) -> None:
        self.lower, self.limit = lower, limit  # no position past ``limit`` is asked about
        # per kind: (its last opening before the position asked about, where that one closes, next opening)
        self.state = {name: (-1, -1, lower.find(name, 0, limit)) for name in _TEXT_ELEMENTS}

    def contain(self, pos: int) -> bool:
        inside = False
        for name, (opened, closed, following) in self.state.items():
            while 0 <= following < pos:
                opened, closed = following, self.lower.find(f"</{name[1:]}", following)
                # a document has one <title> (the parser moves a second one into it)
                following = -1 if name == "<title" else self.lower.find(name, following + 1, self.limit)
            self.state[name] = (opened, closed, following)
            inside = inside or (opened >= 0 and not 0 <= closed < pos)
        return inside


def _without(html: str, spans: tuple[tuple[int, int], ...]) -> str:
    """``html`` without the <style> elements at ``spans``: juice removes them before matching, so they
    are nobody's sibling (``p:first-child`` matches a <p> after a <style> in <body>)."""
    kept = [html[stop:start] for (_, stop), (start, _) in zip(((0, 0), *spans), spans, strict=False)]
    return "".join(kept) + html[spans[-1][1] :]


def _insertion_point(document: str) -> int:
    """Where kept <style> blocks go in css-inline's output: the end of <head>, else the start of <body>."""
    head_end = document.find("</head>")
    if head_end >= 0:
        return head_end
    body = document.find("<body")
    return document.index(">", body) + 1 if body >= 0 else 0


def _insert(document: str, blocks: str) -> str:
    split = _insertion_point(document)
    return document[:split] + blocks + document[split:]


def _inline_css_inline(html: str, extra_css: str | None, options: InlineOptions) -> str:
    html, protected = code_blocks.protect(html, options.code_blocks)
    lower = html.lower()  # str.find is many times faster than a case-insensitive regex over the document
    if len(lower) != len(html):  # "İ".lower() is two characters: lower only ASCII, so positions agree
        lower = html.translate(_ASCII_LOWER)
    styles, embedded, spans = _style_blocks(html, lower)
    if protected:  # what CSS holds is copied to elements: a block there comes back escaped
        styles = tuple(code_blocks.moved(css) for css in styles)
    var_styles = options.resolve_css_variables and "var(" in lower  # some style may use var()
    plan = _plan(styles, extra_css or "", options, var_styles)
    source = _without(html, spans) if spans and options.remove_style_tags else html
    try:
        marked = str(plan.inliner.inline(source))
    except (ValueError, TypeError) as exc:  # css_inline.InlineError is a ValueError
        raise InlineError(f"css-inline failed: {exc}") from exc
    for name in _IMPLIED:
        if f"<{name}" not in lower and f"<{name} style=" in marked:  # implied by the parser, not written
            marked = _IMPLIED_TAG[name].sub(f"<{name}>", marked)
    kept_css = plan.kept_css
    if options.remove_inlined_selectors and not options.remove_style_tags and plan.sheets:
        kept_css = _not_inlined(plan, marked)
    blocks = "".join(embedded) + (f"<style>\n{kept_css}\n</style>" if kept_css else "")
    blocks = code_blocks.restore_css(blocks, protected)
    cascade = plan.cascade
    if cascade.marker_css and (
        cascade.context or (var_styles and _OWN_CUSTOM_PROPERTY.search(lower) is not None)
    ):
        document = apply_in_context(marked, cascade, blocks)
    else:
        document = _cascaded(marked, cascade, blocks)
    if "<html" not in lower and document.startswith("<html style="):
        document = _IMPLIED_HTML.sub("<html>", document, count=1)
    if "data-juice-" in lower:
        document = _TAG.sub(_without_juice_controls, document)
    if options.xml_mode:
        document = _VOID_TAG.sub(_self_closed, document)
    return code_blocks.restore(document, protected)


def _cascaded(marked: str, cascade: CascadePlan, blocks: str) -> str:
    """css-inline's ``marked`` output with each marked tag rewritten on its own, and ``blocks`` inserted."""
    if not cascade.marker_css:
        return _insert(marked, blocks) if blocks else marked
    if not blocks:
        return apply_cascade(marked, cascade)
    split = _insertion_point(marked)  # rewrite around it: one copy of a document that can be megabytes
    return "".join((apply_cascade(marked[:split], cascade), blocks, apply_cascade(marked[split:], cascade)))


def _without_juice_controls(match: re.Match[str]) -> str:
    """A tag without juice's data-juice-duplicates/-important attributes, as juice writes it."""
    tag = match.group(3)
    return match.group(1) if tag is None else JUICE_CONTROL.sub("", tag)


def _self_closed(match: re.Match[str]) -> str:
    """juice's xmlMode for a void element (``<br/>``); comments and raw text are left as they are."""
    return match.group(1) or f"{match.group(3)}/>"
